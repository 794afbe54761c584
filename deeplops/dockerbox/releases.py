"""A service's releases: the one it runs and those before it, as a deploy tool keeps them.

A release is a name (``r1``, ``r2``, ...) and whether it is its kind's broken build or
configuration (sandbox/README.md, releases). A deploy pushes a new release and a rollback pops
back to the one before, as ``helm rollback`` goes back one. The history travels with the
container, in its label ``LABEL`` (so a process attaching to a live sandbox finds it), and the
program is told its release in its environment (``environment``). Pure bookkeeping: switching a
container to a release is ``mechanisms.deploy`` and ``mechanisms.rollback``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from deeplops.errors import SandboxError

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


@dataclass(frozen=True)
class History:
    """A service's releases, oldest first; the last is the one it runs."""

    releases: tuple[Release, ...] = field(default_factory=lambda: (Release(FIRST),))
    made: int = 1
    """Releases ever made for it: a new one is ``r{made + 1}``, also after a rollback."""

    @property
    def current(self) -> Release:
        return self.releases[-1]

    def deploy(self, broken: bool = False) -> History:
        """The history after a deploy of a new release."""
        new = Release(f"r{self.made + 1}", broken)
        return History((*self.releases, new)[-HISTORY_MAX:], self.made + 1)

    def rollback(self) -> History | None:
        """The history after a rollback to the previous release; None when there is none."""
        if len(self.releases) < 2:
            return None
        return History(self.releases[:-1], self.made)


def environment(history: History) -> dict[str, str]:
    """What the service's program is told of the release it runs (``sandbox/service.py``)."""
    return {"DEEPLOPS_RELEASE": history.current.name, "DEEPLOPS_RELEASE_BROKEN": "1" if history.current.broken else "0"}


def to_label(history: History) -> str:
    """The history as the container's label holds it (JSON)."""
    return json.dumps({"releases": [[r.name, r.broken] for r in history.releases], "made": history.made})


def from_label(text: str | None, where: str = "a container") -> History:
    """The history a label holds; a fresh one when there is none (a container made before releases,
    or by Compose); SandboxError, in one line, when the label is not one ``to_label`` writes."""
    if text is None:
        return History()
    try:
        doc = json.loads(text) if len(text) <= LABEL_MAX else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and _valid(doc.get("releases"), doc.get("made")):
        return History(tuple(Release(name, broken) for name, broken in doc["releases"]), doc["made"])
    raise SandboxError(f"label {LABEL} of {where} is not a release history: {text[:100]!r}")


def _valid(entries: object, made: object) -> bool:
    """Whether a label's fields are a history: 1 to HISTORY_MAX [name, broken] pairs, and a count."""
    if not isinstance(entries, list) or not 0 < len(entries) <= HISTORY_MAX:
        return False
    pairs = all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and e[0] and isinstance(e[1], bool)
        for e in entries
    )
    return pairs and isinstance(made, int) and not isinstance(made, bool) and made >= len(entries)
