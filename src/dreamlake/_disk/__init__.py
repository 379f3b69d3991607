"""The 0.2.x session directory on disk, blocking: JSONL logs, files, atomic replaces, file locks."""
