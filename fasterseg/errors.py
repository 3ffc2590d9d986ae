"""Exceptions that the CLI turns into one-line messages (exit 1) instead of tracebacks."""


class UserError(Exception):
    """A mistake in the user's input (bad path, bad size, bad file): print one line, exit 1."""
