import pytest

from dreamlake import InvalidNameError, Session
from dreamlake._schema.names import check_name


@pytest.mark.parametrize(
    "bad", ["", "  ", ".", "..", "a/b", "../x", "/abs", "a\\b", "nul\x00", ".hidden", "x" * 256]
)
def test_unsafe_names_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        check_name("track", bad)


def test_non_str_name_is_rejected() -> None:
    with pytest.raises(InvalidNameError, match="must be a str"):
        check_name("track", 3)


@pytest.mark.parametrize("good", ["loss", "val loss", "train-acc_1", "ünï", "a.b"])
def test_ordinary_names_pass(good: str) -> None:
    assert check_name("track", good) == good


def test_session_and_track_names_cannot_escape_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidNameError):
        Session("../escape", "ws", local_path=tmp_path)
    with pytest.raises(InvalidNameError):
        Session("run", "/etc", local_path=tmp_path)
    with Session("run", "ws", local_path=tmp_path) as s:
        with pytest.raises(InvalidNameError):
            s.track("../../outside")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]
