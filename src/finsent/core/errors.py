"""One exception type for every user-facing failure: the CLI prints its message on one line, exits 2."""


class FinsentError(Exception):
    """A problem with the user's input (file, field, option), reported without a traceback."""
