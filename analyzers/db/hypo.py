"""HypoPG: hypothetical indexes that only this session's planner sees.

``Hypo.open(session)`` finds the extension in the current database (it must
have been created there: ``CREATE EXTENSION hypopg``; we never create it).
``create(definition)`` adds a hypothetical index and returns its oid;
``size(oid)`` is ``hypopg_relation_size``; ``reset()`` drops them all. They
live in the backend's memory, are not catalog rows, and die with the session;
we reset them anyway when done. The functions are called schema-qualified,
so a search_path without the extension's schema does not matter.

``missing_message(session)`` says what to run when the extension is absent.
"""

from __future__ import annotations

import re

from takealook.analyzers.db.catalog import quote_ident
from takealook.analyzers.db.connection import Session

_EXTENSION_SQL = """
SELECT n.nspname AS schema, e.extversion AS version
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'hypopg'
"""

_AVAILABLE_SQL = "SELECT count(*) > 0 AS available FROM pg_available_extensions WHERE name = 'hypopg'"

_HYPO_NAME = re.compile(r"^<(\d+)>")


class Hypo:
    def __init__(self, session: Session, schema: str, version: str):
        self.session = session
        self.schema = quote_ident(schema)
        self.version = version

    @classmethod
    def open(cls, session: Session) -> "Hypo | None":
        row = session.query_one(_EXTENSION_SQL)
        session.end()
        return cls(session, row["schema"], row["version"]) if row else None

    def create(self, definition: str) -> int:
        row = self.session.query_one(f"SELECT indexrelid::int AS oid FROM {self.schema}.hypopg_create_index(%s)",
                                     (definition,))
        return row["oid"]

    def size(self, oid: int) -> int:
        row = self.session.query_one(f"SELECT {self.schema}.hypopg_relation_size(%s)::bigint AS size", (oid,))
        return int(row["size"])

    def drop(self, oid: int) -> None:
        self.session.query(f"SELECT {self.schema}.hypopg_drop_index(%s)", (oid,))

    def reset(self) -> None:
        self.session.query(f"SELECT {self.schema}.hypopg_reset()")
        self.session.end()

    @staticmethod
    def oid_of(index_name: str) -> int | None:
        """The oid in a plan's hypothetical index name (``<13556>btree_orders_customer_id``)."""
        match = _HYPO_NAME.match(index_name)
        return int(match.group(1)) if match else None


def missing_message(session: Session) -> str:
    row = session.query_one(_AVAILABLE_SQL)
    session.end()
    if row and row["available"]:
        return "HypoPG is installed on the server but not in this database: run CREATE EXTENSION hypopg"
    major = session.server_version_num // 10000
    return (f"HypoPG is not installed on the server: install it (e.g. apt-get install postgresql-{major}-hypopg), "
            "then run CREATE EXTENSION hypopg in this database")
