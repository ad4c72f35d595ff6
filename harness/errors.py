"""Errors a user can fix. The CLI prints their message as one line, without a traceback."""


class UserError(Exception):
    """A mistake in the user's input (arguments, files, configuration).

    The message must say what is wrong and what to do next.
    """


class DataFormatError(UserError):
    """Raw data files are missing, malformed, or not in a recognised format."""
