"""Errors meant for the person at the terminal: one line, no traceback."""


class FedllmError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class Terminated(Exception):
    """SIGTERM arrived: unwind, stopping what was started, and exit 0."""


def raise_terminated(signum: int, frame: object) -> None:
    """Signal handler turning SIGTERM into `Terminated`."""
    raise Terminated
