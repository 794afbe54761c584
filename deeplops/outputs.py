"""Writing what a command produces: paths checked before the work starts, files written whole or
not at all, and special files written to in place, never replaced.

A regular file (or a symlink to one, or a path not yet there) is written to a temporary file
beside its real target and renamed over it, so a reader never sees half a file and an error
leaves nothing behind. A device, FIFO or socket (``/dev/null``, ``/dev/stdout``, a pipe), or a
symlink to one, is opened and written to: renaming over ``/dev/null`` as root would replace the
device with a plain file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from deeplops.errors import ConfigError

PICTURE_SUFFIXES = (".png", ".svg", ".pdf")
"""The picture formats a plot is written in, chosen by the file's suffix."""

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import: os.umask can only be read by setting it


def is_special(path: Path) -> bool:
    """Whether ``path`` exists and is (or links to) something other than a regular file or folder."""
    try:
        mode = path.stat().st_mode  # follows symlinks
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_file(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Fail now, with one line, if ``path`` cannot take a file written by ``option`` later.

    ``suffixes`` lists the endings a file must have (a special file needs none).
    """
    if is_special(path):
        return path
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder: expected a file path")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {path}: expected a {' or '.join(suffixes)} file, got {path.suffix or 'no suffix'}")
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{option} {path}: a symbolic link to nothing: expected a file path")
    _check_parent(path.resolve().parent, option, path)
    return path


def check_dir(path: Path, option: str) -> Path:
    """Fail now if ``path`` cannot be (or become) a folder that ``option``'s files are written into."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file: expected a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {path}: the folder is not writable")
        return path
    _check_parent(path.resolve().parent, option, path)
    return path


def _check_parent(parent: Path, option: str, path: Path) -> None:
    """The nearest existing folder above ``path`` must be a writable folder (the rest is made later)."""
    probe = parent
    while not probe.exists():
        if probe.is_symlink():
            raise ConfigError(f"{option} {path}: {probe} is a symbolic link to nothing: expected a folder")
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option} {path}: {probe} is a file: expected a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {probe} is not writable")


def write_text(path: Path, text: str, option: str) -> None:
    """Write ``text`` to ``path`` whole (see the module's docstring); errors name ``option``."""
    write_bytes(path, text.encode(), option)


def write_bytes(path: Path, data: bytes, option: str) -> None:
    """Write ``data`` to ``path`` whole, or in place when it is a special file."""
    try:
        if is_special(path):
            with path.open("wb") as f:
                f.write(data)
            return
        target = path.resolve()  # a symlink to a file stays a symlink: its target is replaced
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide a result from its readers
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write ({exc.strerror or exc.__class__.__name__})") from None
