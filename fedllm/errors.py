"""Errors meant for the person at the terminal: one line, no traceback."""


class FedllmError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class Terminated(Exception):
    """SIGTERM arrived: unwind, stopping what was started, and exit 0."""


def raise_terminated(signum: int, frame: object) -> None:
    """Signal handler turning SIGTERM into `Terminated`."""
    raise Terminated


class Stopped(Exception):
    """A signal stopped a run after every started process was stopped; says how to resume."""

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.exit_code = exit_code
