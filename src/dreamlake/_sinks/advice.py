"""What an ``OSError`` from storage means for the user and what to do about it, by errno."""

from __future__ import annotations

import errno
import resource

from .._disk.fdcache import FILES


def advice(exc: BaseException) -> str:
    """One sentence: what happened (in words, not an errno) and what to do."""
    code = exc.errno if isinstance(exc, OSError) else None
    where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
    if code == errno.EMFILE:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return (
            f"too many open files in this process (limit {soft}); dreamlake itself keeps at most "
            f"{FILES.capacity} track files open, so close files or sockets the program leaves open, "
            "or raise the limit ('ulimit -n 4096' or resource.setrlimit(RLIMIT_NOFILE, ...))"
        )
    if code == errno.ENFILE:
        return (
            "too many open files on this machine (the system-wide table is full); close other "
            "programs' files or raise fs.file-max"
        )
    if code == errno.ENOSPC:
        return f"the disk is full{where}; free space on it or choose a local_path on another disk"
    if code == errno.EDQUOT:
        return f"the disk quota is used up{where}; free space or ask for a larger quota"
    if code == errno.EFBIG:
        return (
            f"a file reached the largest size allowed{where} (ulimit -f, or the file system's own "
            "limit); raise the limit or use a file system that allows larger files"
        )
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}; make local_path writable by this user"
    if code == errno.EROFS:
        return f"the file system is read-only{where}; choose a local_path on a writable one"
    if code == errno.ENOENT:
        return (
            f"a file or directory is missing{where}; was the session directory removed while the "
            "session was open?"
        )
    if code == errno.EIO:
        return f"the device reported an I/O error{where}; check the disk and the system log"
    return "fix the cause above"
