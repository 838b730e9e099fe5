"""The one exception type for bad user input.

Anything the user can fix (a missing path, an unknown config key, weights that
do not fit) raises :class:`InputError` with a one-line message saying what is
wrong, where, and what to do. The CLI prints that line and exits with status 2;
library callers get an ordinary ``ValueError`` subclass.
"""


class InputError(ValueError):
    """Bad input from the user; the message is one complete line."""


def one_line(error: BaseException) -> str:
    """The error's message as one line, also when a DataLoader worker raised it.

    PyTorch re-raises a worker's exception in the main process as the same type
    with the worker's whole traceback as its message; the user's line is the
    traceback's last, after the exception's name.
    """
    text = str(error)
    if "\n" not in text or "Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    name, _, message = last.partition(": ")
    return message if message and type(error).__name__ in name else last


class NonFiniteLossError(ArithmeticError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


class StorageError(OSError):
    """A file could not be written (disk full, quota, file-size limit); the file there before is intact."""
