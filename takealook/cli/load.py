"""``takealook load generate|run|compare`` (issue 6)."""

from takealook.cli.common import add_output_options, not_implemented


def register(subparsers) -> None:
    parser = subparsers.add_parser("load", help="reproduce slow endpoints with Locust")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text in (("generate", "write a locustfile from traces"), ("run", "run a suite headless"),
                       ("compare", "compare runs before and after a change")):
        sub = verbs.add_parser(verb, help=text)
        if verb == "compare":
            add_output_options(sub)
        sub.set_defaults(run=not_implemented(f"load {verb}"))
