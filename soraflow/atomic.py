"""Atomic file output: a reader never sees a half-written file, a failed write leaves nothing.

Write to a temporary name in the destination folder, then ``os.replace`` it into place
(atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import glob
import re
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError


TMP_MARK = ".tmp"  # temporary files are ".<name>.<pid>.<random>.tmp<suffix>" beside their target
_TMP_EXTRA = 32  # bytes the temporary name adds to the target's: dot, pid, random part, ".tmp"

# Name prefix of the file check_writable makes and removes at once; a process killed in between
# leaves one, which resuming jobs remove (soraflow.world.dataset).
PROBE_PREFIX = ".soraflow-probe."


def check_writable(path: str | os.PathLike, probe: bool = True) -> Path:
    """Fail early, before any expensive work, when ``path`` cannot be written: a directory, a missing
    or read-only folder, a name too long for the filesystem, a folder that takes no new files (/proc;
    found by making a file there, unless ``probe`` is off because the caller makes one next anyway)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist")
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(path.name.encode("utf-8", "surrogateescape")) + _TMP_EXTRA > name_max:
        raise InputError(f"cannot write {path}: the file name is {len(path.name)} characters; "
                         f"at most {name_max - _TMP_EXTRA} fit on this filesystem")
    if path.is_dir():
        raise InputError(f"output path {path} is a directory, expected a file name")
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write {path}: folder {folder} is not writable")
    if not probe:
        return path
    try:  # the only sure test: make a file there (some folders refuse what access() allows)
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Fail early when the folder ``path`` cannot hold outputs: it is a file, or it (or the folder it
    would be created in) is not writable. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, expected a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} {path}: {existing} is a file, expected a folder")
    check_writable(existing / ".soraflow-write-check")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(path: Path) -> int:
    """Delete the temporary files a killed writer left beside ``path`` (their pid no longer runs);
    returns how many. A writer that is still running keeps its own."""
    # Exactly what atomic_path names (mkstemp's random part is 8 characters), so the temporary of
    # another target whose name merely starts the same way ("a.mp4.5.mp4") is never taken for one.
    ours = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]{{8}}{re.escape(TMP_MARK + path.suffix)}")
    removed = 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_MARK}{glob.escape(path.suffix)}"):
        match = ours.fullmatch(tmp.name)
        if match and not _pid_alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place, on error delete it.

    The temporary name keeps the suffix, so writers that pick a format from it (PyAV, PIL)
    still work, and carries the writer's pid, so one killed with ``kill -9`` (which no ``finally``
    survives) has its leftover removed by the next write to the same path.
    """
    # No probe file: the temporary below is the probe, and a probe left by a kill would be litter.
    path = check_writable(path, probe=False)
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f"{TMP_MARK}{path.suffix}", dir=path.parent)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus umask).
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")
