"""The one exception type for bad user input.

Anything the user can fix (a missing path, an unknown config key, weights that
do not fit) raises :class:`InputError` with a one-line message saying what is
wrong, where, and what to do. The CLI prints that line and exits with status 2;
library callers get an ordinary ``ValueError`` subclass.
"""


class InputError(ValueError):
    """Bad input from the user; the message is one complete line."""


class NonFiniteLossError(ArithmeticError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


class StorageError(OSError):
    """A file could not be written (disk full, quota, file-size limit); the file there before is intact."""
