import random

import pytest

from dreamlake import InvalidNameError, Session
from dreamlake._schema.names import check_name, check_track_name, track_dirname, track_name_from_dirname


@pytest.mark.parametrize(
    "bad", ["", "  ", ".", "..", "a/b", "../x", "/abs", "a\\b", "nul\x00", ".hidden", "x" * 256]
)
def test_unsafe_names_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        check_name("session", bad)


def test_non_str_name_is_rejected() -> None:
    with pytest.raises(InvalidNameError, match="must be a str"):
        check_name("session", 3)


@pytest.mark.parametrize("good", ["loss", "val loss", "train-acc_1", "ünï", "a.b"])
def test_ordinary_names_pass(good: str) -> None:
    assert check_name("session", good) == good


def test_session_and_track_names_cannot_escape_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidNameError):
        Session("../escape", "ws", local_path=tmp_path)
    with pytest.raises(InvalidNameError):
        Session("run", "/etc", local_path=tmp_path)
    with Session("run", "ws", local_path=tmp_path) as s:
        with pytest.raises(InvalidNameError):
            s.track("..")
        # A track name is a name, not a path: this one is allowed and stored flat under tracks/.
        s.track("../../outside").append(v=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".spool", "ws"]
    assert list((tmp_path / ".spool").iterdir()) == []  # the session's spool went at close()
    assert sorted(p.name for p in (s.path / "tracks").iterdir()) == ["%2E.%2F..%2Foutside"]


# Track names: any printable text, '/' included, stored flat under tracks/ with a reversible escape.

TRICKY = [
    "loss",
    "train_loss",
    "train/loss",
    "val/acc",
    "a/b",
    "a%2Fb",
    "a%b",
    "%",
    "%%",
    "%25",
    "%2E",
    "%2F",
    "%2f",
    "a/../b",
    "../x",
    "./x",
    "/abs",
    "/",
    "//",
    "a/",
    ".x",
    "..x",
    "...",
    ".%2E",
    ".%",
    "x.",
    "a.b",
    "val loss",
    " leading and trailing ",
    "q?x=1#frag",
    "ünï/cödé",
    "损失/训练",
    "😀/🚀",
    "👨\u200d👩\u200d👧",
    "a\u00a0b",
]


@pytest.mark.parametrize("good", TRICKY)
def test_track_names_that_pass(good: str) -> None:
    assert check_track_name(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " ",
        "\u3000",
        ".",
        "..",
        "nul\x00",
        "a\\b",
        "line\nbreak",
        "cr\r",
        "tab\there",
        "del\x7f",
        "c1\x85",
        "sep\u2028",
        "lone\ud800",
        "x" * 256,
        "é" * 128,
        "/" * 86,
        "%" * 86,
        "." + "x" * 253,
    ],
)
def test_track_names_that_are_refused(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="track name"):
        check_track_name(bad)


def test_refusals_say_what_is_allowed() -> None:
    with pytest.raises(InvalidNameError, match="'/' included"):
        check_track_name("a\nb")
    with pytest.raises(InvalidNameError, match="must be a str"):
        check_track_name(3)
    with pytest.raises(InvalidNameError, match="at most 255"):
        check_track_name("x" * 256)


def test_the_length_limit_is_on_the_escaped_directory_name() -> None:
    assert check_track_name("x" * 255)
    assert check_track_name("/" * 85)  # 255 bytes once escaped
    assert check_track_name("é" * 127)  # 254 bytes of UTF-8
    assert check_track_name("." + "x" * 252)  # %2E + 252
    short = "/" * 86  # 86 characters, 258 bytes once escaped
    assert len(short) < 255
    with pytest.raises(InvalidNameError, match="258 bytes"):
        check_track_name(short)


def test_workspace_and_session_names_keep_the_one_component_rule() -> None:
    for kind in ("workspace", "session"):
        with pytest.raises(InvalidNameError):
            check_name(kind, "train/loss")


@pytest.mark.parametrize(
    ("name", "dirname"),
    [
        ("loss", "loss"),
        ("train_loss", "train_loss"),
        ("a.b", "a.b"),
        ("a/b", "a%2Fb"),
        ("a%2Fb", "a%252Fb"),
        ("a%b", "a%25b"),
        ("a/../b", "a%2F..%2Fb"),
        (".x", "%2Ex"),
        ("..x", "%2E.x"),
        ("%2E", "%252E"),
        ("/", "%2F"),
        ("ünï b?#", "ünï b?#"),
    ],
)
def test_track_dirname(name: str, dirname: str) -> None:
    assert track_dirname(name) == dirname
    assert track_name_from_dirname(dirname) == name


def _check_escape(name: str) -> None:
    dirname = track_dirname(name)
    assert track_name_from_dirname(dirname) == name, name
    assert "/" not in dirname
    assert not dirname.startswith(".")
    if name:
        assert dirname not in ("", ".", "..")


def test_escape_round_trips_tricky_names() -> None:
    for name in TRICKY:
        _check_escape(name)
    dirnames = {track_dirname(name) for name in TRICKY}
    assert len(dirnames) == len(set(TRICKY))


def test_escape_round_trips_random_names() -> None:
    # No hypothesis here: a seeded generator over an alphabet made to build escape-like sequences.
    rng = random.Random(20240611)
    alphabet = ["/", "%", ".", "2", "5", "F", "f", "E", "e", "a", " ", "é", "损", "😀", "?", "#"]
    seen: dict[str, str] = {}
    for _ in range(20_000):
        name = "".join(rng.choices(alphabet, k=rng.randint(0, 12)))
        _check_escape(name)
        dirname = track_dirname(name)
        assert seen.setdefault(dirname, name) == name, (name, seen[dirname])  # no two names share a dir
        if name.strip() and name not in (".", ".."):
            assert check_track_name(name) == name
