"""Scripts that the published dreamlake 0.2.1 runs in its own venv, for ``test_compat_021.py``.

They import nothing but 0.2.1 and the standard library. Each is run as
``<venv>/bin/python -I -c SCRIPT ROOT WORKSPACE SESSION SPEC_JSON`` and prints one JSON document
(the last line of its stdout). Python's ``json`` is used on both ends, so a spec or a result may carry
NaN/Infinity (as 0.2.1 itself writes them).
"""

# Write through 0.2.1's public API. SPEC:
#   tracks:  {name: {"fields": {description, tags, metadata}, "append": [point], "batch": [point]}}
#   params:  [kwargs of one parameters().set() call]
#   logs:    [{"message", "level", "metadata"?, "style"?}]; style "fluent": log(metadata=...).<level>(msg),
#            "kwargs": log(msg, level=..., **metadata), else log(msg, level=..., metadata=...)
#   files:   [{"path", "prefix", "tags", "description", "metadata"}]
#   delete:  [position in "files" of a file to delete after saving]
# Prints {"appends": {track: [result of each call]}, "files": [save() result], "deleted": [...]}.
WRITE = r"""
import json
import sys

from dreamlake import Session

root, workspace, name, spec = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
out = {"appends": {}, "files": [], "deleted": []}
with Session(name=name, workspace=workspace, local_path=root) as session:
    for track_name, ops in spec.get("tracks", {}).items():
        track = session.track(name=track_name, **ops.get("fields", {}))
        results = [track.append(**point) for point in ops.get("append", [])]
        if ops.get("batch"):
            results.append(track.append_batch(ops["batch"]))
        out["appends"][track_name] = results
    for params in spec.get("params", []):
        session.parameters().set(**params)
    for entry in spec.get("logs", []):
        if entry.get("style") == "fluent":
            builder = session.log(metadata=entry.get("metadata"))
            getattr(builder, entry["level"])(entry["message"])
        elif entry.get("style") == "kwargs":
            session.log(entry["message"], level=entry["level"], **entry["metadata"])
        else:
            session.log(entry["message"], level=entry["level"], metadata=entry.get("metadata"))
    for f in spec.get("files", []):
        out["files"].append(
            session.file(
                file_path=f["path"],
                prefix=f["prefix"],
                tags=f["tags"],
                description=f["description"],
                metadata=f["metadata"],
            ).save()
        )
    for position in spec.get("delete", []):
        out["deleted"].append(session.file(file_id=out["files"][position]["id"]).delete())
print(json.dumps(out))
"""

# Read everything back through 0.2.1's public API. SPEC:
#   tracks: [name], page: [start_index, limit], prefixes: [prefix], tags: [tag],
#   dest: a directory to download every listed file into.
# 0.2.1 has no API that reads logs back, so "logs" and "log_sequence" are read from logs/logs.jsonl
# and logs/.log_sequence exactly as 0.2.1's LocalStorage.write_log writes (and numbers) them.
READ = r"""
import hashlib
import json
import os
import sys
from importlib.metadata import version

import dreamlake
from dreamlake import Session

root, workspace, name, spec = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
out = {"version": version("dreamlake"), "module": dreamlake.__file__, "tracks": {}, "downloads": {}}
with Session(name=name, workspace=workspace, local_path=root) as session:
    for track_name in spec["tracks"]:
        track = session.track(name=track_name)
        out["tracks"][track_name] = {
            "all": track.read(start_index=0, limit=10000),
            "page": track.read(start_index=spec["page"][0], limit=spec["page"][1]),
            "stats": track.stats(),
        }
    listed = session.track(name=spec["tracks"][0]).list_all()
    out["list_all"] = sorted(listed, key=lambda t: t["name"])
    out["params"] = session.parameters().get()
    out["params_nested"] = session.parameters().get(flatten=False)
    out["files"] = session.file().list()
    out["by_prefix"] = {p: [f["id"] for f in session.file(prefix=p).list()] for p in spec["prefixes"]}
    out["by_tag"] = {t: [f["id"] for f in session.file(tags=[t]).list()] for t in spec["tags"]}
    for f in out["files"]:
        dest = os.path.join(spec["dest"], f["id"] + "-" + f["filename"])
        path = session.file(file_id=f["id"], dest_path=dest).download()  # verifies the SHA-256
        with open(path, "rb") as fh:
            blob = fh.read()
        out["downloads"][f["id"]] = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
logs_dir = os.path.join(root, workspace, name, "logs")
with open(os.path.join(logs_dir, "logs.jsonl"), encoding="utf-8") as fh:
    out["logs"] = [json.loads(line) for line in fh if line.strip()]
with open(os.path.join(logs_dir, ".log_sequence"), encoding="utf-8") as fh:
    out["log_sequence"] = int(fh.read().strip())
print(json.dumps(out))
"""
