"""Errors meant for the person at the terminal: one line, no traceback."""


class FedllmError(Exception):
    """A problem with the user's input or environment, reported as one line."""
