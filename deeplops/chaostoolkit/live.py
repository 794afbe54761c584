"""The live sandboxes a Chaos Toolkit run acts on, attached once per process.

One ``chaos run`` calls every action and probe in one process, so the attached sandbox (and any
flood an action started) lives as long as the experiment; a flood ends when that process exits.
"""

from __future__ import annotations

from collections.abc import Iterable

from docker.models.containers import Container

from deeplops.dockerbox import host, stack
from deeplops.dockerbox.sandbox import DockerSandbox
from deeplops.errors import SandboxError

_BOXES: dict[str, DockerSandbox] = {}


def sandbox(name: str) -> DockerSandbox:
    """The live sandbox ``name``, attached on first use."""
    host.check_name(name)
    box = _BOXES.get(name)
    if box is None or _ids(box.containers.values()) != _ids(stack.containers(box.client, name).values()):
        # First use, or the sandbox was brought down and up again since: attach afresh (a flood
        # at the old containers ends).
        if box is not None:
            box.close()
        box = _BOXES[name] = DockerSandbox.attach(name)
        return box
    # Others (a sidecar, another run) may have restarted services since: new addresses and veths.
    for service, container in box.containers.items():
        container.reload()
        if container.status == "running":
            box.rewire(service)
    return box


def release(name: str) -> None:
    """Forget the attached sandbox ``name``, stopping any flood an action started on it."""
    box = _BOXES.pop(name, None)
    if box is not None:
        box.close()


def _ids(containers: Iterable[Container]) -> set[str]:
    return {c.id for c in containers}


def slot(box: DockerSandbox, target: str) -> int:
    """The slot of service ``target`` in ``box``, or a SandboxError naming the services."""
    if target not in box.topology.index:
        raise SandboxError(f"unknown service {target!r} in sandbox {box.name!r}: expected one of "
                           f"{', '.join(box.topology.names)}")  # fmt: skip
    return box.topology.index[target]
