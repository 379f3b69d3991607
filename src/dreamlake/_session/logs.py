"""Log levels, the 0.2.x fluent ``session.log(metadata=...).info(...)`` builder, and the bridge from
the standard ``logging`` module. ``Session.log`` itself (the hot path) is ``LogCore`` in C, with its
slow path in ``core.py``; the agent writes the entries it queues to ``logs/logs.jsonl`` (see
``_disk/jsonl.encode_log_lines``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import SessionCore
    from .session import Session

class LogBuilder:
    """What ``session.log(metadata=...)`` returns without a message: call a level on it.

    ``session.log(metadata={"epoch": 1}).info("started", lr=0.1)`` logs ``"started"`` with the
    metadata of both calls (the level method's keywords win). On an ``AsyncSession`` the level
    methods return what ``log()`` returns there: await it.
    """

    __slots__ = ("_metadata", "_session")

    def __init__(self, session: SessionCore, metadata: dict[str, Any] | None) -> None:
        self._session = session
        self._metadata = metadata

    def _write(self, level: str, message: str, extra: dict[str, Any]) -> Any:
        metadata = {**self._metadata, **extra} if self._metadata else extra
        return self._session.log(message, level=level, metadata=metadata or None)

    def debug(self, message: str, **extra: Any) -> Any:
        """Log ``message`` at level ``debug``."""
        return self._write("debug", message, extra)

    def info(self, message: str, **extra: Any) -> Any:
        """Log ``message`` at level ``info``."""
        return self._write("info", message, extra)

    def warn(self, message: str, **extra: Any) -> Any:
        """Log ``message`` at level ``warn``."""
        return self._write("warn", message, extra)

    def error(self, message: str, **extra: Any) -> Any:
        """Log ``message`` at level ``error``."""
        return self._write("error", message, extra)

    def fatal(self, message: str, **extra: Any) -> Any:
        """Log ``message`` at level ``fatal``."""
        return self._write("fatal", message, extra)


def _level_of(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "fatal"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


class LoggingHandler(logging.Handler):
    """Sends standard ``logging`` records to a session's logs.

    ``logging.getLogger("train").addHandler(LoggingHandler(session))`` makes
    ``logger.info(...)`` land in ``logs/logs.jsonl``. The record's level maps to the nearest
    dreamlake level at or below it (``WARNING`` -> ``warn``, ``CRITICAL`` -> ``fatal``); its message
    goes through the handler's formatter (tracebacks included); ``metadata`` holds the logger
    name, where the call was made, and any ``extra=`` fields that are JSON-able.

    Records of dreamlake's own ``dreamlake`` logger are skipped: they report the agent's trouble,
    and sending them back through that agent could wait on the very queue that is stuck.
    """

    def __init__(self, session: Session, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.session = session

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` as a log entry of the session."""
        if record.name == "dreamlake" or record.name.startswith("dreamlake."):
            return
        try:
            metadata: dict[str, Any] = {
                "logger": record.name,
                "module": record.module,
                "function": record.funcName,
                "line": record.lineno,
            }
            for key, value in record.__dict__.items():
                if key not in _RECORD_FIELDS and not key.startswith("_"):
                    metadata[key] = value if type(value) in _JSON_SCALARS else repr(value)
            self.session.log(self.format(record), level=_level_of(record.levelno), metadata=metadata)
        except Exception:
            self.handleError(record)


_JSON_SCALARS = (int, float, str, bool, type(None))
# Attributes every LogRecord has; anything else came from ``extra=``.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
