"""Errors that a user can act on.

Raising :class:`InputError` (or a subclass) means "the user's input is wrong": the command line
prints the message without a traceback and exits with status 2. The message must name the file or
key, the value found, and what was expected.
"""


class InputError(Exception):
    """Bad input from the user: a file, a value, or a combination that cannot work."""
