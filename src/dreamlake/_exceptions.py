"""Errors raised by dreamlake.

Every error derives from :class:`DreamlakeError` and from the builtin it stands for, so
``except ValueError`` keeps working for code that does not know about dreamlake::

    DreamlakeError
    ├── InvalidNameError (ValueError)       a workspace/session/track name that is empty or escapes the root
    ├── InvalidValueError (TypeError)       a point field that cannot be stored as JSON
    ├── InvalidArgumentError (ValueError)   an argument out of range (empty batch, negative index)
    ├── ParameterConflictError (ValueError) a parameter that would be both a value and a group
    ├── ChecksumError (ValueError)          a downloaded file does not match its SHA-256
    ├── FileMissingError (FileNotFoundError, ValueError)  no such file to save, or no such file id
    ├── ConfigError (ValueError)            a bad Session option or DREAMLAKE_* variable
    ├── SessionClosedError (RuntimeError)   a call on a session that is not open
    ├── WriteProtectedError (RuntimeError)  a write to a session opened with write_protected=True
    ├── QueueFullError (RuntimeError)       on_full="raise" and the queue is full
    ├── FlushTimeoutError (TimeoutError)    flush()/close() ran past its deadline
    └── StorageError (OSError)              the sink failed to write; points are kept and retried
"""

from __future__ import annotations


class DreamlakeError(Exception):
    """Root of every error raised by dreamlake."""


class InvalidNameError(DreamlakeError, ValueError):
    """A name is empty, reserved, or would escape the storage root."""


class InvalidValueError(DreamlakeError, TypeError):
    """A point field holds a value that cannot be stored."""


class InvalidArgumentError(DreamlakeError, ValueError):
    """An argument has the right type but a value that makes no sense."""


class ConfigError(DreamlakeError, ValueError):
    """An option passed to ``Session`` or read from the environment is invalid."""


class ParameterConflictError(DreamlakeError, ValueError):
    """A parameter name would be both a value and a group (``a`` and ``a.b``)."""


class ChecksumError(DreamlakeError, ValueError):
    """A file's bytes do not match the SHA-256 recorded when it was saved."""


class FileMissingError(DreamlakeError, FileNotFoundError, ValueError):
    """The file to save does not exist, or the session has no file with that id.

    Also a ``ValueError``, which is what dreamlake 0.2.x raised for a missing file.
    """


class WriteProtectedError(DreamlakeError, RuntimeError):
    """The session is write-protected: parameters, logs, tracks and files are read-only."""


class SessionClosedError(DreamlakeError, RuntimeError):
    """The session is not open (never opened, or already closed)."""


class QueueFullError(DreamlakeError, RuntimeError):
    """The queue is full and ``on_full="raise"`` was chosen."""


class FlushTimeoutError(DreamlakeError, TimeoutError):
    """``flush()`` or ``close()`` did not finish before its deadline."""


class StorageError(DreamlakeError, OSError):
    """Writing to the sink failed; the unwritten points are kept and retried."""

