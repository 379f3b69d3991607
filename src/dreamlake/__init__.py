"""dreamlake: experiment tracking whose ``append()`` costs about a microsecond and never loses a point.

    from dreamlake import Session

    with Session(name="run-1", workspace="project", local_path=".dreamlake") as session:
        loss = session.track("loss")
        for step in range(1000):
            loss.append(value=1.0 / (step + 1), step=step)
"""

from ._config import AgentConfig
from ._exceptions import (
    ConfigError,
    DreamlakeError,
    FlushTimeoutError,
    InvalidArgumentError,
    InvalidNameError,
    InvalidValueError,
    QueueFullError,
    SessionClosedError,
    StorageError,
)
from ._session import Session, dreamlake_session
from ._track import Track

__version__ = "0.3.0.dev0"

__all__ = [
    "AgentConfig",
    "ConfigError",
    "DreamlakeError",
    "FlushTimeoutError",
    "InvalidArgumentError",
    "InvalidNameError",
    "InvalidValueError",
    "QueueFullError",
    "Session",
    "SessionClosedError",
    "StorageError",
    "Track",
    "__version__",
    "dreamlake_session",
]
