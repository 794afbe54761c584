"""A service's releases: the one it runs and those before it, as a deploy tool keeps them.

A release is a name (``r1``, ``r2``, ...), whether it is its kind's broken build or
configuration, and whether its code leaks memory (sandbox/README.md, releases). A deploy pushes a
new release and a rollback pops back to the one before, as ``helm rollback`` goes back one. The
history travels with the container, in its label ``LABEL`` (so a process attaching to a live
sandbox finds it), and the program is told its release in its environment (``environment``).
Pure bookkeeping: switching a container to a release is ``mechanisms.deploy`` and
``mechanisms.rollback`` (and ``mechanisms.memory_leak``, a deploy of a leaking one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from deeplops.errors import SandboxError
from deeplops.system import LEAK_MB_PER_TICK, TICK_S

LABEL = "deeplops.releases"
"""On each service's container: its release history (``to_label``)."""
FIRST = "r1"
"""The release every service starts on: good."""
HISTORY_MAX = 10
"""Releases kept to roll back to, the newest last (``helm``'s default history)."""
LABEL_MAX = 4096
"""Longest label read: a history of HISTORY_MAX short names is far shorter."""


@dataclass(frozen=True)
class Release:
    """One release of a service."""

    name: str
    broken: bool = False
    """Whether it is the kind's broken build or configuration: it runs, and fails its requests."""
    leaks: bool = False
    """Whether its code leaks memory: it serves, and grows until the kernel kills it (our own
    programs only, ``topology.CODE_KINDS``)."""


@dataclass(frozen=True)
class History:
    """A service's releases, oldest first; the last is the one it runs."""

    releases: tuple[Release, ...] = field(default_factory=lambda: (Release(FIRST),))
    made: int = 1
    """Releases ever made for it: a new one is ``r{made + 1}``, also after a rollback."""

    @property
    def current(self) -> Release:
        return self.releases[-1]

    def deploy(self, broken: bool = False, leaks: bool = False) -> History:
        """The history after a deploy of a new release."""
        new = Release(f"r{self.made + 1}", broken, leaks)
        return History((*self.releases, new)[-HISTORY_MAX:], self.made + 1)

    def rollback(self) -> History | None:
        """The history after a rollback to the previous release; None when there is none."""
        if len(self.releases) < 2:
            return None
        return History(self.releases[:-1], self.made)


def environment(history: History) -> dict[str, str]:
    """What the service's program is told of the release it runs (``sandbox/service.py``): the leak's
    rate too, so the image's programs need not import deeplops to know it."""
    current = history.current
    return {
        "DEEPLOPS_RELEASE": current.name,
        "DEEPLOPS_RELEASE_BROKEN": "1" if current.broken else "0",
        "DEEPLOPS_RELEASE_LEAKS": "1" if current.leaks else "0",
        "DEEPLOPS_LEAK_MB_PER_S": repr(LEAK_MB_PER_TICK / TICK_S),
    }


def to_label(history: History) -> str:
    """The history as the container's label holds it (JSON): ``[name, broken, leaks]`` each."""
    return json.dumps({"releases": [[r.name, r.broken, r.leaks] for r in history.releases], "made": history.made})


def from_label(text: str | None, where: str = "a container") -> History:
    """The history a label holds; a fresh one when there is none (a container made before releases,
    or by Compose); SandboxError, in one line, when the label is not one ``to_label`` writes. A label
    written before leaks holds ``[name, broken]`` pairs: those releases do not leak."""
    if text is None:
        return History()
    try:
        doc = json.loads(text) if len(text) <= LABEL_MAX else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and _valid(doc.get("releases"), doc.get("made")):
        return History(tuple(Release(*entry) for entry in doc["releases"]), doc["made"])
    raise SandboxError(f"label {LABEL} of {where} is not a release history: {text[:100]!r}")


def _valid(entries: object, made: object) -> bool:
    """Whether a label's fields are a history: 1 to HISTORY_MAX entries, each ``[name, broken]`` or
    ``[name, broken, leaks]``, and a count."""
    if not isinstance(entries, list) or not 0 < len(entries) <= HISTORY_MAX:
        return False
    releases = all(
        isinstance(e, list) and len(e) in (2, 3) and isinstance(e[0], str) and e[0]
        and all(isinstance(flag, bool) for flag in e[1:])
        for e in entries
    )  # fmt: skip
    return releases and isinstance(made, int) and not isinstance(made, bool) and made >= len(entries)
