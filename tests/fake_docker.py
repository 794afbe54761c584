"""A small fake of the Docker client: the parts of ``docker.DockerClient`` the backend calls.

Unit tests of the Docker backend run against it without an engine, as docker-py's own unit tests
run against a fake API client; the integration tests (marked ``docker``) use a real engine.
Containers are plain records whose state a test sets; ``reload`` of a removed one answers 404, as
the engine does.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from docker.errors import NotFound

_IDS = itertools.count(1)


class FakeResponse:
    """What docker-py's APIError reads of an HTTP response."""

    def __init__(self, status_code: int, reason: str = "", url: str = "http+docker://localhost/v1.41/x") -> None:
        self.status_code, self.reason, self.url = status_code, reason, url


def not_found(what: str) -> NotFound:
    """The engine's answer for an object that does not exist (as docker-py raises it)."""
    return NotFound(
        "404 Client Error", response=FakeResponse(404, "Not Found"), explanation=f"No such container: {what}"
    )


def _matches(labels: dict[str, str], filters: dict[str, Any] | None) -> bool:
    """The engine's ``label`` filter: ``key=value``, or ``key`` for any value."""
    wanted = (filters or {}).get("label")
    if wanted is None:
        return True
    for one in [wanted] if isinstance(wanted, str) else wanted:
        key, eq, value = one.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


@dataclass
class FakeContainer:
    """One container: its name, labels and state; ``health`` is its HEALTHCHECK status, if any."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    status: str = "running"
    health: str | None = None
    id: str = field(default_factory=lambda: f"{next(_IDS):064x}")
    removed: bool = False
    signals: list[int] = field(default_factory=list)
    """Signals sent through the engine (``kill``), in order."""
    starts: int = 0

    image: str = "sha256:" + "1" * 64
    """The image ID it runs."""
    env: list[str] = field(default_factory=list)
    created: str = "2026-12-04T00:00:00Z"
    """When the engine made it (ISO 8601, UTC)."""

    @property
    def attrs(self) -> dict[str, Any]:
        state: dict[str, Any] = {"Status": self.status, "Pid": 0}  # Pid 0: not a process of this host
        state["StartedAt"] = f"2026-12-04T00:00:{self.starts:02d}Z"
        if self.health is not None:
            state["Health"] = {"Status": self.health}
        return {"Id": self.id, "Name": f"/{self.name}", "State": state, "Image": self.image,
                "Created": self.created, "Config": {"Labels": self.labels, "Env": self.env},
                "HostConfig": {"Memory": 0}, "Mounts": [], "NetworkSettings": {"Networks": {}}}  # fmt: skip

    def reload(self) -> None:
        if self.removed:
            raise not_found(self.name)

    def kill(self, signal: int = signal.SIGKILL) -> None:
        self.reload()
        self.signals.append(int(signal))
        self.status = "exited"

    def start(self) -> None:
        self.reload()
        self.starts += 1
        self.status = "running"

    def unpause(self) -> None:
        self.status = "running"


class FakeContainers:
    """``client.containers``."""

    def __init__(self, found: list[FakeContainer]) -> None:
        self.found = found

    def list(self, all: bool = False, filters: dict[str, Any] | None = None, **_: Any) -> list[FakeContainer]:
        return [
            c for c in self.found if not c.removed and (all or c.status == "running") and _matches(c.labels, filters)
        ]


@dataclass
class FakeNetwork:
    """A network: its name and labels, as ``attrs`` holds them."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Name": self.name, "Labels": self.labels}


class FakeNetworks:
    """``client.networks``."""

    def __init__(self, found: list[FakeNetwork]) -> None:
        self.found = found

    def list(self, filters: dict[str, Any] | None = None, **_: Any) -> list[FakeNetwork]:
        return [n for n in self.found if _matches(n.labels, filters)]


class FakeAPI:
    """``client.api``: the low-level calls the backend makes for speed (a list without inspection)."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def containers(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        found = self.client.containers.list(all=all, filters=filters)
        return [{"Id": c.id, "Names": [f"/{c.name}"], "Labels": c.labels, "State": c.status} for c in found]


class FakeClient:
    """``docker.DockerClient`` over the given containers and networks."""

    def __init__(self, containers: Sequence[FakeContainer] = (), networks: Sequence[FakeNetwork] = ()) -> None:
        self.containers = FakeContainers(list(containers))
        self.networks = FakeNetworks(list(networks))
        self.api = FakeAPI(self)
        self.happened: list[dict[str, Any]] = []
        """Events, as the engine streams them: each read once, by the next ``events`` call."""

    def ping(self) -> bool:
        return True

    def events(self, **_: Any) -> list[dict[str, Any]]:
        found, self.happened = self.happened, []
        return found

    def event(self, container: FakeContainer, action: str, at: float, **attributes: str) -> None:
        """Something the engine did to ``container`` at ``at`` (seconds since the epoch)."""
        actor = {"ID": container.id, "Attributes": {**container.labels, **attributes}}
        self.happened.append({"Action": action, "timeNano": int(at * 1e9), "Actor": actor})
