"""``takealook traces import|report`` (issues 3 and 5)."""

from takealook.cli import traces_import
from takealook.cli.common import add_output_options, add_store_option, not_implemented


def register(subparsers) -> None:
    parser = subparsers.add_parser("traces", help="import and analyse traces")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    traces_import.register(verbs)
    rep = verbs.add_parser("report", help="where requests spend their time")
    add_store_option(rep)
    add_output_options(rep)
    rep.set_defaults(run=not_implemented("traces report"))
