"""``takealook collect``: the embedded OTLP collector (issue 3)."""

from takealook.cli.common import add_store_option, not_implemented


def register(subparsers) -> None:
    parser = subparsers.add_parser("collect", help="run the embedded OTLP collector")
    add_store_option(parser)
    parser.set_defaults(run=not_implemented("collect"))
