"""``server.points``: checking JSON lines at ingest and building cold chunks from hot batches."""

from __future__ import annotations

import pytest
import zstandard

from dreamlake._disk.jsonl import encode_points, py_frame_lines
from dreamlake.server.hot.base import Batch
from dreamlake.server.points import HOT_BATCH, build_chunk, check_lines, lines_to_blobs

GOOD = [
    (b'{"v":1.5,"s":"a"}\n{"v":{"$float":"NaN"}}\n{"nested":{"k":[1,2]}}\n', 3),
    (b"{}\n", 1),
    (b'{"a":"x\\ny"}\n{"b":[]}\n', 2),  # an escaped newline is not a line end
    (b'{"a":1} \n {"b":2}\n', 2),
    (b"", 0),
]
BAD = [
    b'{"v":1}',  # no final newline
    b"\n",
    b"\n\n",
    b'{"v":1}\n\n',
    b'{"a":1}\n\n{"b":2}\n',
    b'{"v":1} {"w":2}\n',
    b'{"a":1}{"b":2}\n\n',
    b'{"a":\n{"x":1}}\n{"b":2}{"c":3}\n',  # a newline inside a value, two values on a line
    b'{"a":"x\ny"}\n',  # a raw newline in a string
    b'{"a":"x\ny\nz"}\n{}\n',
    b'{"a":1\n}\n',
    b'{\n"a":1}\n',
    b'{"a":[1\n,2]}\n',
    b"[1]\n",
    b'{"v":1}\n5\n',
    b'"s"\n',
    b"null\n",
    b"{oops\n",
]


@pytest.mark.parametrize(("lines", "count"), GOOD)
def test_check_lines_counts_one_object_per_line(lines: bytes, count: int) -> None:
    assert check_lines(lines) == count


@pytest.mark.parametrize("lines", BAD)
def test_check_lines_refuses_anything_but_one_object_per_line(lines: bytes) -> None:
    with pytest.raises(ValueError, match=r"newline|JSON"):
        check_lines(lines)


@pytest.mark.parametrize("size", [1, 7, HOT_BATCH, 5_000, 10_000])
def test_a_chunk_holds_its_lines_however_the_hot_batches_fall(size: int) -> None:
    lines = encode_points([{"v": i * 0.5, "s": i} for i in range(25_000)])
    batches, start = [], 0
    for count, blob in lines_to_blobs(lines):
        batches.append(Batch(start, count, blob, f"t{start}"))
        start += count
    every = lines.split(b"\n")
    for k in (0, 1, 25_000 // size - 1):
        raw = zstandard.ZstdDecompressor().decompress(build_chunk(k * size, size, batches) or b"")
        _, _, body = raw.partition(b"\n")
        part = b"".join(line + b"\n" for line in every[k * size : (k + 1) * size])
        assert body == py_frame_lines(k * size, part)
    assert build_chunk(0, size, batches[1:]) is None  # the first batch is gone: not this server's
