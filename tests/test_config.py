import pytest

from dreamlake import AgentConfig, ConfigError


def test_defaults_are_valid() -> None:
    config = AgentConfig.resolve({}, environ={})
    assert config == AgentConfig()
    assert config.on_full == "block"


def test_environment_overrides_defaults_and_keywords_override_environment() -> None:
    env = {
        "DREAMLAKE_MAX_QUEUE": "1000",
        "DREAMLAKE_ON_FULL": "drop_oldest",
        "DREAMLAKE_FLUSH_INTERVAL": "0.5",
        "DREAMLAKE_BATCH_SIZE": "10",
    }
    config = AgentConfig.resolve({"max_queue": 2000, "on_full": None}, environ=env)
    assert config.max_queue == 2000
    assert config.on_full == "drop_oldest"
    assert config.flush_interval == 0.5
    assert config.batch_size == 10


@pytest.mark.parametrize(
    "options",
    [
        {"on_full": "explode"},
        {"max_queue": 0},
        {"max_queue": 1.5},
        {"batch_size": -1},
        {"flush_interval": 0},
        {"close_timeout": True},
        {"batch_size": 100, "max_queue": 10},
        {"spool": "no"},
    ],
)
def test_bad_options_raise_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AgentConfig.resolve(options, environ={})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="DREAMLAKE_MAX_QUEUE"):
        AgentConfig.resolve({}, environ={"DREAMLAKE_MAX_QUEUE": "lots"})


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        AgentConfig.resolve({"max_qeue": 3}, environ={})


@pytest.mark.parametrize(
    ("raw", "expected"), [("0", False), ("off", False), ("No", False), ("1", True), ("yes", True)]
)
def test_spool_switch_from_the_environment(raw: str, expected: bool) -> None:
    env = {"DREAMLAKE_SPOOL": raw}
    assert AgentConfig.resolve({}, environ=env).spool is expected
    assert AgentConfig.resolve({"spool": not expected}, environ=env).spool is not expected


def test_a_bad_spool_switch_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="DREAMLAKE_SPOOL='maybe'"):
        AgentConfig.resolve({}, environ={"DREAMLAKE_SPOOL": "maybe"})
