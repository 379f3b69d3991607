"""dreamlake: experiment tracking whose ``append()`` costs about a microsecond and never loses a point.

    from dreamlake import Session

    with Session(name="run-1", workspace="project", local_path=".dreamlake") as session:
        loss = session.track("loss")
        for step in range(1000):
            loss.append(value=1.0 / (step + 1), step=step)
        session.parameters().set(model={"lr": 0.001})
        session.log("done", level="info")
        session.file("model.pt", prefix="/models").save()

Where a point goes, folder by folder: ``_session/track.py`` → ``_agent/hotpath.py`` (C: ``_speedups.c``)
→ ``_agent/queue.py`` → ``_agent/agent.py``, then ``_sinks/local.py`` → ``_disk/session_dir.py`` →
``_disk/jsonl.py``. The rules both sides share are in ``_schema/``; the server (``server/``, extra
``dreamlake[server]``) goes ``app.py`` → ``compat.py`` / ``ingest.py`` → ``hot/`` → ``archiver.py`` →
``cold/``.
"""

from ._config import AgentConfig
from ._exceptions import (
    ChecksumError,
    ConfigError,
    DreamlakeError,
    FileMissingError,
    FlushTimeoutError,
    InvalidArgumentError,
    InvalidNameError,
    InvalidValueError,
    ParameterConflictError,
    QueueFullError,
    SessionClosedError,
    StorageError,
    WriteProtectedError,
)
from ._session.async_session import AsyncSession
from ._session.files import AsyncFileHandle, FileHandle
from ._session.logs import LogBuilder, LoggingHandler
from ._session.params import AsyncParameters, Parameters
from ._session.session import Session, dreamlake_session
from ._session.track import AsyncTrack, Track

__version__ = "0.3.0.dev0"

__all__ = [
    "AgentConfig",
    "AsyncFileHandle",
    "AsyncParameters",
    "AsyncSession",
    "AsyncTrack",
    "ChecksumError",
    "ConfigError",
    "DreamlakeError",
    "FileHandle",
    "FileMissingError",
    "FlushTimeoutError",
    "InvalidArgumentError",
    "InvalidNameError",
    "InvalidValueError",
    "LogBuilder",
    "LoggingHandler",
    "ParameterConflictError",
    "Parameters",
    "QueueFullError",
    "Session",
    "SessionClosedError",
    "StorageError",
    "Track",
    "WriteProtectedError",
    "__version__",
    "dreamlake_session",
]
