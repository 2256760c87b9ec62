"""``takealook db audit|indexes`` (issue 4)."""

from takealook.cli.common import add_output_options, not_implemented


def register(subparsers) -> None:
    parser = subparsers.add_parser("db", help="audit PostgreSQL databases")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    audit = verbs.add_parser("audit", help="statements, indexes, tables, sessions, exposure")
    audit.add_argument("--dsn", action="append", metavar="DSN")
    add_output_options(audit)
    audit.set_defaults(run=not_implemented("db audit"))
    indexes = verbs.add_parser("indexes", help="missing indexes, proved with HypoPG")
    indexes.add_argument("--dsn", metavar="DSN")
    add_output_options(indexes)
    indexes.set_defaults(run=not_implemented("db indexes"))
