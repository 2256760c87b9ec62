"""The errors takealook raises. Only the CLI turns them into messages and exit codes.

Every part may import this module (it uses the standard library only). Messages
are one line and say what to do next.
"""


class TakealookError(Exception):
    """Base class. The CLI prints ``str(error)`` on one line and exits with 2."""

    exit_code = 2


class UsageError(TakealookError):
    """Bad flags or arguments."""


class InputError(TakealookError):
    """A file, store, run folder or statement we were given cannot be used."""


class ConnectionFailed(TakealookError):
    """A database or server we were pointed at cannot be reached."""


class MissingExtra(TakealookError):
    """An optional dependency is not installed; the message names the pip command."""

    def __init__(self, extra: str, module: str):
        super().__init__(
            f"this command needs the {module!r} package: pip install 'takealook[{extra}]'"
        )
        self.extra = extra
        self.module = module


class NotImplementedYet(TakealookError):
    """A command declared in the design that has not landed yet."""

    def __init__(self, command: str):
        super().__init__(f"{command}: not implemented yet")
