"""The one way ocr-watcher writes a file that others read: temp name, fsync, rename.

A reader (a person, a script, another daemon) never sees a partial file, and after a crash the
file is either the old version or the new one.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"  # temporary files are named ".<name>.tmp-<hex>" and swept on recovery


# Temp names need to be unlikely to meet, not unpredictable: a generator seeded once (and again in a
# forked child) names them without a getrandom call per file.
_names = random.Random()
os.register_at_fork(after_in_child=_names.seed)


def temp_name_for(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{_names.getrandbits(32):08x}")


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network filesystems refuse fsync on directories
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True, mode: int = 0o666) -> None:
    """`mode` is filtered by the umask, like any file a program creates: 0644 under the usual 022,
    0664 under 002 (`jobs.group_writable`, for outboxes shared by a group)."""
    tmp = temp_name_for(path)
    # os.write on the descriptor, not a file object: that would add fstat, isatty and lseek calls
    # to every write, each a hand-over of the GIL on a busy daemon.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)  # a network filesystem may report a failed write only here: it raises
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path, text: str, **kwargs: Any) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), **kwargs)


def json_bytes(obj: Any) -> bytes:
    """JSON as ocr-watcher writes every file of it: indented, UTF-8, a newline at the end."""
    return (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


def atomic_write_json(path: Path, obj: Any, **kwargs: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj), **kwargs)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TMP_MARK in name
