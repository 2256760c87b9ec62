"""``takealook traces import FILE...`` (issue 3)."""

from takealook.cli.common import add_store_option, not_implemented


def register(verbs) -> None:
    imp = verbs.add_parser("import", help="load OTLP JSON files into the store")
    imp.add_argument("files", nargs="+", metavar="FILE")
    add_store_option(imp)
    imp.set_defaults(run=not_implemented("traces import"))
