"""Atomic file writes: a crash never leaves a half-written file that looks complete.

Every file is first written beside its destination under a temporary name, flushed
to disk, then renamed over the destination (rename is atomic on POSIX filesystems).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync(path.parent)  # the rename itself: without it a power cut can undo it
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(final_dir: Path, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `final_dir` to write into; when the block succeeds it
    replaces `final_dir` (`replace_dir`), and on any failure (a full disk, Ctrl-C) it is
    removed, so no half-written folder stays behind. The folder's name is this process's own,
    so two processes writing the same `final_dir` never delete each other's work; leftovers of
    processes that died are cleared. With `keep_existing` (a cache two processes may fill at
    once with the same content), a `final_dir` that appeared meanwhile is kept and this copy
    dropped: the first to finish wins, atomically."""
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_leftovers(final_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.{os.getpid()}.", suffix=".tmp", dir=final_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not keep_existing:
        replace_dir(tmp, final_dir)
        return
    _fsync_tree(tmp)
    try:
        os.rename(tmp, final_dir)  # fails when final_dir exists and is not empty: someone finished first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final_dir.is_dir():
            raise
    _fsync(final_dir.parent)


def _clear_dead_leftovers(final_dir: Path) -> None:
    """Remove `.NAME.<pid>.*.tmp` folders whose process is gone (killed mid-write)."""
    for leftover in final_dir.parent.glob(f".{final_dir.name}.*.tmp"):
        pid = leftover.name[len(final_dir.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def inside(base: Path, path: Path) -> bool:
    """Whether `path` lies inside the folder `base`, reached through no symbolic link below it:
    a folder from someone else (a runs folder, an ensemble) must not lead tunesmith out of it.
    A path a file system cannot hold (a NUL byte, a name too long) is not inside anything."""
    try:
        below = [p for p in (path, *path.parents) if p.is_relative_to(base) and p != base]
        return path.resolve().is_relative_to(base.resolve()) and not any(p.is_symlink() for p in below)
    except (OSError, ValueError):
        return False


@contextmanager
def exclusive(path: Path, refusal: str) -> Iterator[None]:
    """Hold an flock on the lock file `path` for the block, with this process's id written in
    it. A second holder is refused with UserError(refusal), `{holder}` in it naming the process
    that holds the lock. The OS drops the lock when its holder exits, even on kill -9, so a
    crash never leaves it stuck."""
    import fcntl

    from tunesmith.errors import UserError

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise UserError(refusal.format(holder=holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def lines(text: str) -> list[str]:
    """The lines of a text file, split at newlines only. `str.splitlines` also splits at
    U+2028, U+2029, U+0085 and other separators that can sit inside a text (a JSON string
    written with ensure_ascii=False holds them raw), which would cut a row in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place, replacing any previous one.

    Directories cannot be swapped in one atomic rename, so the old one is first moved
    aside; readers that find no `final_dir` fall back to `final_dir.old` (see
    `train.checkpoint.find`).
    """
    _fsync_tree(tmp_dir)  # on disk before the previous one goes: a power cut keeps one good copy
    old = final_dir.with_name(final_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    _fsync(final_dir.parent)  # both renames on disk before the previous copy is deleted
    if old.exists():
        shutil.rmtree(old)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True) + [folder]:
        _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_full(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) is the disk running out of space;
    safetensors reports it as its own error type, with the OS's words in the message."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "StorageFull" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays reach the metrics; JSON wants plain Python numbers.
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
