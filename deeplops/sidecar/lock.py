"""One project, one sidecar: a lock per project, held for the sidecar's whole life.

Two sidecars on one stack fight: each sees the other's repair as a fresh symptom and repairs
again. The lock is an ``flock`` on ``LOCK_DIR/sidecar-PROJECT.lock``: the kernel releases it when
its holder's last descriptor closes, so a sidecar killed by SIGKILL frees its project at once,
with no stale PID to judge. It works from a container too, given the host's folder
(``/run/deeplops:/run/deeplops``: the Compose example mounts it), since flock locks are the
kernel's, whichever mount namespace the file is opened from. The holder writes its PID and host
name into the file, so the one refused can say who holds the project.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import stat
from pathlib import Path

from deeplops import bounds
from deeplops.dockerbox import host
from deeplops.errors import ConfigError, SandboxError

LOCK_DIR = host.STATE_DIR
"""Folder of the per-project lock files: the host's runtime state folder, cleared at boot."""
MAX_PROJECT = 63
"""Longest project name (a DNS label's length; Compose and deeplops names are far shorter)."""
_PROJECT = re.compile(rf"^[a-z0-9][a-z0-9_.-]{{0,{MAX_PROJECT - 1}}}$")
_ATTEMPTS = 5
"""Opens of the lock file before giving up, when its holder keeps replacing it under us."""


def check_project(project: object) -> str:
    """``project`` when it is a safe file name (lower-case letters, digits, '-', '_' and '.', not
    leading); otherwise a ConfigError naming what was expected and what was given."""
    if not isinstance(project, str) or not _PROJECT.match(project):
        raise ConfigError(
            f"--project must be 1 to {MAX_PROJECT} lower-case letters, digits, '-', '_' or '.', starting with a "
            f"letter or digit, got {bounds.shown(project)}"
        )
    return project


class ProjectLock:
    """The lock on one project, held until ``release`` or the process's end (however it ends)."""

    def __init__(self, project: str, folder: Path | None = None) -> None:
        """Take the lock on ``project``, or a SandboxError naming the project and its holder."""
        self.project = check_project(project)
        self.path = (folder or LOCK_DIR) / f"sidecar-{project}.lock"
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._fd = self._acquire()
        except OSError as exc:
            raise SandboxError(f"lock {self.path}: cannot take it ({exc.strerror or exc})") from None
        # Who holds it, for the next one to be refused; the lock itself is the flock, not this text.
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    def _acquire(self) -> int:
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise SandboxError(f"lock {self.path}: expected a regular file")
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise SandboxError(
                        f"project {self.project!r} already has a sidecar ({_holder(fd)}; lock {self.path}): "
                        "expected one sidecar per project"
                    ) from None
                # A holder unlinks the file on release: if ours was unlinked or replaced between
                # open and flock, the lock we hold is on a file nobody else will ever open.
                if _same_file(fd, self.path):
                    fd, kept = -1, fd
                    return kept
            finally:
                if fd >= 0:
                    os.close(fd)
        raise SandboxError(f"lock {self.path}: replaced under us {_ATTEMPTS} times in a row")

    def release(self) -> None:
        """Give the project up (unlinked while still held, so no one locks a file about to vanish)."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)
        self._fd = -1


def _holder(fd: int) -> str:
    """'pid N on host H' as the holder wrote it, or a note that it has not yet."""
    with contextlib.suppress(OSError, ValueError):
        pid, name = os.pread(fd, 200, 0).decode().split()
        return f"held by pid {int(pid)} on host {name}"
    return "its holder has not written its pid yet"


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
