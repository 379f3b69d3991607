"""Timestamps: the cached formatter writes exactly what ``datetime.isoformat`` (0.2.x) writes."""

import datetime
import random

from dreamlake._schema.timestamps import utc_iso


def reference(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.replace(tzinfo=None).isoformat() + "Z"


def test_matches_datetime_isoformat() -> None:
    rng = random.Random(7)
    samples = [rng.uniform(0, 4e9) for _ in range(20_000)]
    samples += [0.0, 1.0, 1.5, 1.9999999, 1_700_000_000.0, 1_700_000_000.9999996, 1_700_000_000.0000004]
    samples += [1_700_000_000 + i * 1e-6 for i in range(2000)]  # many calls within one second
    for seconds in samples:
        assert utc_iso(seconds) == reference(seconds), seconds
