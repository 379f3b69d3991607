import dreamlake


def test_all_is_pinned() -> None:
    assert sorted(dreamlake.__all__) == sorted(
        [
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
    }
    for error, builtin in pairs.items():
        assert issubclass(error, dreamlake.DreamlakeError)
        assert issubclass(error, builtin)
