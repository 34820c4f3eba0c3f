"""Run-directory lock: one writer per run dir, held for the life of the process.

`RUN/.lock` is locked with fcntl.flock and holds the owner's pid. The kernel drops a flock when its
process dies, so a crash leaves at most a stale file that the next run takes over; a clean exit
removes it. A directory the lock itself created is removed again if nothing else was written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from difflab.core.errors import UsageError

LOCK_NAME = ".lock"


class RunLocked(UsageError):
    """Another live process holds the run dir's lock."""


def _owner(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return text if text.isdigit() else "(unknown pid)"


def _acquire(path: Path) -> int:
    """An fd holding the flock of `path`; another holder → RunLocked naming its pid."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UsageError(
                f"cannot write in run dir {path.parent} ({err.strerror}); pick a writable `out`"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            owner = _owner(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise RunLocked(
                f"run dir {path.parent} is in use by process {owner} (another training run); "
                "wait for it to finish or pick another `out`"
            ) from None
        try:  # the file may have been removed by its previous owner between open and flock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(run: str | os.PathLike) -> Iterator[Path]:
    """Hold RUN/.lock while the block runs (creating RUN if needed); yields the lock path."""
    run = Path(run)
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create run dir {run} ({err.strerror}); pick another `out`") from None
    path = run / LOCK_NAME
    fd = _acquire(path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)  # still locked: a waiting opener sees a new inode and retries
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                run.rmdir()  # only if the run wrote nothing


def lock_holder(run: str | os.PathLike) -> int | None:
    """The pid holding RUN/.lock, or None when the run dir is free."""
    path = Path(run) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        owner = _owner(fd)
        return int(owner) if owner.isdigit() else -1
    finally:
        os.close(fd)
    return None
