"""The repairs a service of a user's Compose project declares by labels, beyond ``restart``.

- ``deeplops.clean``: paths inside the container that are safe to clean, comma-separated; each is
  ``DIR`` (everything in it) or ``DIR/PATTERN`` (the entries of DIR whose name matches, a glob
  in the last component only). Enables ``clean_disk``, and the disk the observation reads.
- ``deeplops.recreate: "true"``: the service may be recreated, losing its volumes' data.
- ``deeplops.rollback: "true"``: the image and configuration it ran before its last deploy is a
  safe release to go back to.

A label is the stack owner's word, not ours to trust: one that is not exactly as above is
refused (the service keeps ``restart`` and what its other labels declare, and the refusal is
audited), and no value can name anything but paths of the container's own (checked again at run
time by ``composeops.clean``) or a yes. Pure: reads a container's labels, touches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deeplops.faults import Repair

CLEAN = "deeplops.clean"
RECREATE = "deeplops.recreate"
ROLLBACK = "deeplops.rollback"
MAX_CLEAN_PATHS = 8
"""Most paths one service may declare: a handful of log and scratch folders."""
MAX_PATH_CHARS = 256
"""Longest declared path."""
_GLOB = frozenset("*?[")
_FLAGS = {"true": True, "false": False}


@dataclass(frozen=True)
class Declared:
    """What one service declares, and the labels refused."""

    clean: tuple[str, ...] = ()
    """Paths to clean, as declared (``DIR`` or ``DIR/PATTERN``)."""
    recreate: bool = False
    rollback: bool = False
    refused: tuple[str, ...] = ()
    """Each refused label, with why."""

    @property
    def repairs(self) -> tuple[Repair, ...]:
        """``restart``, and each repair declared."""
        declared = ((Repair.CLEAN_DISK, bool(self.clean)), (Repair.RECREATE, self.recreate),
                    (Repair.ROLLBACK, self.rollback))  # fmt: skip
        return (Repair.RESTART, *(repair for repair, yes in declared if yes))

    @property
    def clean_dirs(self) -> tuple[str, ...]:
        """The folder of each path to clean: where its disk is read."""
        return tuple(dict.fromkeys(split(path)[0] for path in self.clean))


def declared(labels: Mapping[str, str]) -> Declared:
    """The repairs ``labels`` (a container's) declare."""
    refused: list[str] = []
    clean: tuple[str, ...] = ()
    if CLEAN in labels:
        try:
            clean = clean_paths(labels[CLEAN])
        except ValueError as exc:
            refused.append(f"{CLEAN}={labels[CLEAN][:80]!r}: {exc}")
    flags = {}
    for name in (RECREATE, ROLLBACK):
        text = labels.get(name, "false")
        flags[name] = _FLAGS.get(text.strip().lower())
        if flags[name] is None:
            refused.append(f"{name}={text[:80]!r}: expected true or false")
    return Declared(clean, bool(flags[RECREATE]), bool(flags[ROLLBACK]), tuple(refused))


def clean_paths(text: str) -> tuple[str, ...]:
    """The paths a ``deeplops.clean`` label declares; ValueError saying what is wrong with one."""
    paths = [p.strip() for p in text.split(",") if p.strip()]
    if not paths:
        raise ValueError("expected absolute paths, comma-separated; got none")
    if len(paths) > MAX_CLEAN_PATHS:
        raise ValueError(f"expected at most {MAX_CLEAN_PATHS} paths, got {len(paths)}")
    for path in paths:
        check_path(path)
    return tuple(dict.fromkeys(paths))


def check_path(path: str) -> str:
    """``path`` when it is a path one may declare; ValueError saying why not.

    Absolute and plain: no ``.`` or ``..`` (which would reach outside the folder named), no empty
    component, no control character, a glob only in the last component, and not ``/`` itself.
    """
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"{path[:40]!r}... is longer than {MAX_PATH_CHARS} characters")
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not absolute: expected a path inside the container, starting with /")
    if any(not ch.isprintable() for ch in path):
        raise ValueError(f"{path!r} holds a control character")
    parts = path[1:].split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{path!r} has an empty, '.' or '..' component: expected a plain path")
    if any(_GLOB & set(p) for p in parts[:-1]):
        raise ValueError(f"{path!r} has a glob before its last component: only the names in one folder may match")
    if len(parts) == 1 and _GLOB & set(parts[0]):
        raise ValueError(f"{path!r} matches entries of / itself: expected a folder below it")
    return path


def split(path: str) -> tuple[str, str]:
    """(folder, pattern) of a checked path: ``DIR/PATTERN`` splits at its last slash when the
    last component is a glob; a plain ``DIR`` is the folder with pattern ``*``."""
    head, _, last = path.rpartition("/")
    if _GLOB & set(last):
        return head, last
    return path, "*"
