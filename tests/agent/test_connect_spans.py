"""Opening a database connection inside a request is a ``connect`` client span, for both drivers."""

from __future__ import annotations

from tests.agent.test_scenarios import CLIENT, run_script


def test_connects_are_spans_named_by_their_database(tmp_path, sink, app_dbs):
    dsn = app_dbs["gateway"]
    bad = dsn.replace("dbname=", "dbname=no_such_db_") if "dbname=" in dsn else dsn + "_no_such_db"
    run_script(tmp_path, f"""
        import asyncio
        import takealook.agent
        assert takealook.agent.start(service_name="connects")
        import psycopg, psycopg2
        from opentelemetry import trace
        tracer = trace.get_tracer("scenario")
        outside = psycopg.connect({dsn!r})  # no request around it: no span
        with tracer.start_as_current_span("request"):
            psycopg2.connect({dsn!r}).close()
            with psycopg.connect({dsn!r}) as conn:
                conn.execute("SELECT 1")
            with psycopg.Connection.connect({dsn!r}):
                pass

            async def main():
                conn = await psycopg.AsyncConnection.connect({dsn!r})
                await conn.close()

            asyncio.run(main())
            for connect in (psycopg.connect, psycopg2.connect):
                try:
                    connect({bad!r}, connect_timeout=5)
                except (psycopg.OperationalError, psycopg2.OperationalError) as error:
                    assert "no_such_db" in str(error)  # the driver's own exception, unchanged
                else:
                    raise SystemExit("connecting to a missing database succeeded")
        outside.close()
        takealook.agent.shutdown()
    """, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint})
    spans = sink.wait_for_spans(lambda spans: any(s["name"] == "request" for s in spans))
    (request,) = [s for s in spans if s["name"] == "request"]
    connects = [s for s in spans if s["attributes"].get("db.operation.name") == "connect"]
    assert len(connects) == 6 and all(s["kind"] == CLIENT and s["parent_span_id"] == request["span_id"]
                                      for s in connects)
    good = [s for s in connects if s["name"] != "connect"]
    database = good[0]["attributes"]["db.namespace"]
    assert len(good) == 4 and {s["name"] for s in good} == {f"connect {database}"}
    assert all("db.query.text" not in s["attributes"] and s["attributes"]["db.system"] == "postgresql"
               for s in connects)
    failed = [s for s in connects if s["name"] == "connect"]
    assert len(failed) == 2 and all(s["status"] == 2 for s in failed)
    statements = [s for s in spans if "db.query.text" in s["attributes"]]
    assert len(statements) == 1  # the one statement run; connecting ran none of its own
