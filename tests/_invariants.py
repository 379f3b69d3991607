"""The storage invariants of DESIGN section 3, checked on a session directory by plain reading.

Used after faults (disk full, I/O errors, kill -9, stress). :func:`violations` returns what is
wrong, as readable strings; an empty list means the session is intact. A torn last line (a write
cut short by a crash) is allowed only where ``allow_torn_tail`` says so: dreamlake repairs it on the
next write or read, and the checker reports what it found in :attr:`Report.torn`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Report:
    """What :func:`check_session` found."""

    violations: list[str] = dataclasses.field(default_factory=list)
    torn: list[str] = dataclasses.field(default_factory=list)  # files whose last line was torn
    tracks: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)  # name -> data
    logs: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def numbered_lines(path: Path, key: str, report: Report, allow_torn_tail: bool) -> list[dict[str, Any]]:
    """The entries of a numbered JSONL file; line k must parse and carry number k."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" unless the last line is torn
    if tail:
        report.torn.append(str(path))
        if not allow_torn_tail:
            report.violations.append(f"{path}: torn last line {tail[:80]!r}")
    entries = []
    for k, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            report.violations.append(f"{path}: line {k} does not parse: {line[:80]!r}")
            continue
        if not isinstance(entry, dict) or entry.get(key) != k:
            report.violations.append(f"{path}: line {k} carries {key}={entry.get(key)!r}, not {k}")
            continue
        entries.append(entry)
    return entries


def _json_file(path: Path, report: Report) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        report.violations.append(f"{path}: not valid JSON ({exc})")
        return None


def check_session(session_dir: Path, *, allow_torn_tail: bool = False) -> Report:
    """Check every file of one session directory."""
    report = Report()
    for sub in ("logs", "tracks", "files"):
        if not (session_dir / sub).is_dir():
            report.violations.append(f"{session_dir / sub} is missing")
    if _json_file(session_dir / "session.json", report) is None:
        report.violations.append(f"{session_dir}/session.json is missing or invalid")
    tracks_dir = session_dir / "tracks"
    for track_dir in sorted(tracks_dir.iterdir()) if tracks_dir.is_dir() else []:
        entries = numbered_lines(track_dir / "data.jsonl", "index", report, allow_torn_tail)
        report.tracks[track_dir.name] = [entry["data"] for entry in entries]
        meta = _json_file(track_dir / "metadata.json", report)
        if meta is not None and meta.get("totalDataPoints", 0) > len(entries):
            # The metadata is replaced after the data is written: it may lag a crash, never lead.
            report.violations.append(
                f"{track_dir}/metadata.json counts {meta['totalDataPoints']} points, the file has "
                f"{len(entries)}"
            )
    logs_path = session_dir / "logs" / "logs.jsonl"
    report.logs = numbered_lines(logs_path, "sequenceNumber", report, allow_torn_tail)
    params = _json_file(session_dir / "parameters.json", report)
    if params is not None and not isinstance(params.get("data"), dict):
        report.violations.append(f"{session_dir}/parameters.json has no data dict")
    index = _json_file(session_dir / "files" / ".files_metadata.json", report) or {"files": []}
    for entry in index.get("files", []):
        if entry.get("deletedAt") is not None:
            continue
        stored = session_dir / "files" / entry["id"] / entry["filename"]
        if not stored.is_file():
            report.violations.append(f"file {entry['id']} is indexed but {stored} is missing")
        elif hashlib.sha256(stored.read_bytes()).hexdigest() != entry["checksum"]:
            report.violations.append(f"file {entry['id']}: {stored} does not match its checksum")
    return report
