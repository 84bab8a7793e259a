"""Errors that a user can act on.

Raising :class:`InputError` (or a subclass) means "the user's input is wrong": the command line
prints the message without a traceback and exits with status 2. The message must name the file or
key, the value found, and what was expected.

:class:`AcquisitionError` means "a remote service failed": a catalogue or server that is down,
refuses, times out or sends a corrupt file. It is not the user's mistake, so it is kept apart
from :class:`InputError`: the command line prints it without a traceback and exits with status 3,
and a retry later (Snakemake's ``retries`` on the download rules) may succeed.
"""


class InputError(Exception):
    """Bad input from the user: a file, a value, or a combination that cannot work."""


class AcquisitionError(Exception):
    """A remote source failed (network, HTTP error, corrupt download); retrying may help."""
