"""``takealook report`` (issue 7)."""

from takealook.cli.common import add_output_options, add_store_option, not_implemented


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="one report from traces, audits and load runs")
    add_store_option(parser)
    add_output_options(parser)
    parser.set_defaults(run=not_implemented("report"))
