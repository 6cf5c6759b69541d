"""One owner per output directory: a run, a prepared data dir or an index is written by one process.

    with hold(out_dir):           # DIR/.lock, exclusive; DirectoryInUse at once if another holds it
        ...write into out_dir...

The lock is a `flock` on DIR/.lock, which holds the owner's PID (for the message only). The kernel
releases it when the owning process exits in any way (SIGKILL, OOM, a lost node), so a lock left by
a killed run never blocks its resume: there is no stale lock to clean up, and nothing to time out.
A second writer (a resubmitted job, a double click) gets one line naming the directory and the PID
that holds it, before it writes anything.

flock locks belong to the open file, not the process: a test can hold a directory from its own process
(`hold` twice on one directory fails the second time), and child processes forked while the lock is
held (data-loader or prepare workers) keep it until they exit too. A directory that is replaced whole
(the index, built in OUT.tmp then renamed) keeps its lock across the swap with `Held.carry_into(new)`.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


class DirectoryInUse(RuntimeError):
    """Another live process owns the output directory; str() is one line naming it and the PID."""


class Held:
    """An exclusive lock on DIR/.lock, held while the file stays open."""

    def __init__(self, directory: Path, fd: int):
        self.directory, self.fd = directory, fd

    def carry_into(self, new_dir) -> None:
        """Make `new_dir/.lock` the file this lock is on (a hard link), before `new_dir` is renamed over
        the locked directory: the lock then survives the swap (a link to one inode, one lock)."""
        target = Path(new_dir) / LOCK_FILE
        target.unlink(missing_ok=True)
        os.link(self.directory / LOCK_FILE, target)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def acquire(directory) -> Held:
    """Create `directory` if needed and lock it; DirectoryInUse when a live process already does."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        raise DirectoryInUse(f"{directory}: in use by another biomamba process ({owner} holds {path}); "
                             "wait for it to finish or stop it, or choose another output directory") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Held(directory, fd)


@contextlib.contextmanager
def hold(directory):
    """`acquire(directory)` for the duration of a with block."""
    held = acquire(directory)
    try:
        yield held
    finally:
        held.release()


def _read_owner(fd: int) -> str:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return f"PID {text}" if text.isdigit() else "a process that has not written its PID yet"
