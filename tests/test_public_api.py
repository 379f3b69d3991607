import dreamlake


def test_all_is_pinned() -> None:
    assert sorted(dreamlake.__all__) == sorted(
        [
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
    )
    for name in dreamlake.__all__:
        assert hasattr(dreamlake, name)


def test_every_error_derives_from_root_and_a_builtin() -> None:
    pairs = {
        dreamlake.InvalidNameError: ValueError,
        dreamlake.InvalidArgumentError: ValueError,
        dreamlake.ConfigError: ValueError,
        dreamlake.InvalidValueError: TypeError,
        dreamlake.SessionClosedError: RuntimeError,
        dreamlake.QueueFullError: RuntimeError,
        dreamlake.FlushTimeoutError: TimeoutError,
        dreamlake.StorageError: OSError,
        dreamlake.ParameterConflictError: ValueError,
        dreamlake.ChecksumError: ValueError,
        dreamlake.FileMissingError: FileNotFoundError,
        dreamlake.WriteProtectedError: RuntimeError,
    }
    for error, builtin in pairs.items():
        assert issubclass(error, dreamlake.DreamlakeError)
        assert issubclass(error, builtin)
