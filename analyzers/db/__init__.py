"""Database audit on a live PostgreSQL (13 or newer), read-only.

Public API (frozen dataclasses in, frozen dataclasses out; nothing prints):

- ``audit.audit_database(dsn, AuditOptions()) -> DatabaseAudit`` and
  ``audit.audit_databases([dsn, ...], options) -> AuditReport``: statements,
  index advice, index and table health, sessions, exposure, as typed findings.
- ``index_advice.advise_indexes(dsn, queries, IndexOptions()) -> IndexAdvice``:
  missing indexes for the pg_stat_statements workload and/or given statements,
  proved with HypoPG (``takealook db indexes``).
- ``exposure.classify_address(addr)``, ``exposure.address_findings(host, hostaddr)``:
  the address check without a connection.
- ``connection.mask_dsn(dsn)``: a DSN fit to show (password masked).

Modules, one question each: ``connection`` (read-only sessions, DSN masking),
``options``, ``findings``, ``statements`` (pg_stat_statements), ``parse``
(pglast, sqlparse fallback), ``catalog``, ``predicates`` (parse tree -> column
uses per table), ``candidates``, ``explain`` (generic plans), ``hypo``
(HypoPG), ``index_advice`` + ``index_selection`` + ``advice_types``,
``index_health``, ``tables``, ``sessions``, ``exposure``, ``audit``.

Statements and advised indexes carry ``fingerprint`` (``takealook.sqltext``)
and ``queryid``: the keys the trace analyzer joins on.
"""
