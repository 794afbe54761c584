"""The deploys of each service of a Compose project, as the sidecar saw them: what ``rollback``
goes back to.

A deploy is a change of what a service's container runs: its image (by ID: a tag moved to a new
build is a deploy) or its configuration (environment, command, labels, mounts, limits), as a
``docker-compose up`` of a changed service makes one. A container replaced by an identical one
is not. The book keeps each service's deploys, newest last, each as what creating its container
again takes (``composeops.creation_spec``), and when the service last changed (a deploy, or a
rollback of ours) and was last replaced by a repair of ours. It lives in a file beside the
project's lock (``deploys_path``, mode 0600, written whole and renamed into place), so a sidecar
restarted, or attached afresh after the change it must see, still knows what ran before.

Only what the sidecar saw a service's own container run is in the book, so a rollback can only
return a service to an image and configuration it ran before. An entry read back from the file
is used only if its spec names this project and this service (``previous``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from deeplops.dockerbox import host

HISTORY_MAX = 10
"""Deploys kept per service, the newest last (as a deploy tool keeps releases)."""
COMPOSE_PROJECT = "com.docker.compose.project"
"""Compose's label naming a container's or a volume's project (read by the sidecar's Compose modules)."""
COMPOSE_SERVICE = "com.docker.compose.service"
"""Compose's label naming a container's service."""
_ANONYMOUS = re.compile(r"^[0-9a-f]{64}:")
_CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "User", "WorkingDir", "Labels", "Healthcheck")
_HOST_KEYS = ("Binds", "Mounts", "Memory", "NanoCpus", "PortBindings", "Privileged", "CapAdd")


def deploys_path(project: str, folder: Path | None = None) -> Path:
    """The book's file for ``project`` (a name ``lock.check_project`` has checked)."""
    return (folder or host.STATE_DIR) / f"sidecar-{project}.deploys.json"


def digest(attrs: dict[str, Any]) -> str:
    """What a container runs, as a short digest of its image ID and configuration (its inspect)."""
    config, hosting = attrs.get("Config") or {}, attrs.get("HostConfig") or {}
    what = {"image": attrs.get("Image"), **{k: config.get(k) for k in _CONFIG_KEYS},
            **{f"host.{k}": hosting.get(k) for k in _HOST_KEYS}}  # fmt: skip
    # An anonymous volume (``/path``, or the volume a replaced container was handed by its ID-like
    # name) is the container's own data, not its configuration: a replace names what it kept.
    what["host.Binds"] = sorted(b for b in hosting.get("Binds") or [] if ":" in b and not _ANONYMOUS.match(b))
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def created(attrs: dict[str, Any]) -> float | None:
    """When the engine made the container (its inspect's ``Created``), in seconds since the epoch."""
    text = str(attrs.get("Created", ""))
    stamp, _, fraction = text.rstrip("Z").partition(".")
    try:
        when = datetime.fromisoformat(stamp + "+00:00").timestamp()
    except ValueError:
        return None
    return when + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)


class DeployBook:
    """One project's deploys, per service (see the module's docstring)."""

    def __init__(self, project: str, folder: Path | None = None, networks: frozenset[str] = frozenset()) -> None:
        """The book of ``project``, whose containers are on ``networks`` (IDs) now. A book kept for
        a project on none of them is of one taken down since (``docker-compose down`` removes its
        networks) and made anew under the same name: what ran there is not this one's past."""
        self.project = project
        self.path = deploys_path(project, folder)
        self._services, known = _load(self.path)
        self._networks = sorted(networks | (known if known & networks else frozenset()))
        if known and networks and not known & networks:
            self._services = {}
            self._save()

    def observe(self, service: str, digest_: str, spec: Callable[[], dict[str, Any]], when: float) -> bool:
        """Record what ``service``'s container runs (its ``digest``; ``spec`` makes its creation
        spec, called only when it is new); True when it is a deploy, a change from what it ran when
        last seen, made at ``when``. The first sighting is not: nothing is known of what ran before."""
        book = self._services.setdefault(service, {"deploys": [], "changed": None, "repaired": None})
        deploys = book["deploys"]
        if deploys and deploys[-1]["digest"] == digest_:
            return False
        deploys.append({"digest": digest_, "spec": spec()})
        del deploys[:-HISTORY_MAX]
        deployed = len(deploys) > 1
        if deployed:
            book["changed"] = when
        self._save()
        return deployed

    def previous(self, service: str) -> dict[str, Any] | None:
        """The creation spec of the deploy before ``service``'s current one; None when there is
        none, or when it does not name this project's ``service`` (a file tampered with)."""
        deploys = self._services.get(service, {}).get("deploys", [])
        if len(deploys) < 2:
            return None
        spec = deploys[-2]["spec"]
        labels = (spec.get("Labels") or {}) if isinstance(spec, dict) else {}
        if labels.get(COMPOSE_PROJECT) != self.project or labels.get(COMPOSE_SERVICE) != service:
            return None
        return dict(spec)

    def rolled_back(self, service: str, now: float) -> None:
        """``service`` went back to its previous deploy: the current one is dropped, so what it
        runs now is recognised as known, and a second rollback goes further back."""
        book = self._services[service]
        book["deploys"].pop()
        book["changed"] = book["repaired"] = now
        self._save()

    def replaced(self, service: str, now: float) -> None:
        """A repair of ours replaced ``service``'s container with one running the same deploy."""
        self._services.setdefault(service, {"deploys": [], "changed": None, "repaired": None})["repaired"] = now
        self._save()

    def since_change(self, service: str, now: float) -> float | None:
        """Seconds since ``service`` last changed (a deploy or a rollback), None if not seen to."""
        changed = self._services.get(service, {}).get("changed")
        return None if changed is None else max(0.0, now - changed)

    def since_repair(self, service: str, now: float) -> float | None:
        """Seconds since a repair of ours last replaced ``service``'s container, None if none did."""
        repaired = self._services.get(service, {}).get("repaired")
        return None if repaired is None else max(0.0, now - repaired)

    def _save(self) -> None:
        """The whole book, written to a fresh file renamed over the old: a reader, or a sidecar
        killed mid-write, never sees half a book."""
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"project": self.project, "networks": self._networks, "services": self._services}, f)
        os.replace(tmp, self.path)


def _load(path: Path) -> tuple[dict[str, dict[str, Any]], frozenset[str]]:
    """A book's services and the project's networks from its file; an empty book when there is
    none or it is not one."""
    try:
        with open(path, opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return {}, frozenset()
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        return {}, frozenset()
    networks = doc.get("networks")
    known = frozenset(n for n in networks if isinstance(n, str)) if isinstance(networks, list) else frozenset()
    kept = {}
    for name, book in services.items():
        deploys = book.get("deploys") if isinstance(book, dict) else None
        if isinstance(deploys, list) and all(isinstance(d, dict) and {"digest", "spec"} <= d.keys() for d in deploys):
            kept[name] = {"deploys": deploys[-HISTORY_MAX:], "changed": _time(book.get("changed")),
                          "repaired": _time(book.get("repaired"))}  # fmt: skip
    return kept, known


def _time(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
