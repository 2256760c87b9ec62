"""``takealook demo`` (issue 7)."""

from takealook.cli.common import not_implemented


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the whole story on three built-in apps")
    parser.set_defaults(run=not_implemented("demo"))
