"""Live sandboxes attached once per process, for those who act on a sandbox they did not make.

The Chaos Toolkit extension calls every action and probe of one ``chaos run`` in one process, and
the sidecar's trials inject faults into the sandbox they watch: both attach here, so the attached
sandbox (and any flood an injection started) lives as long as that process, or until
``release``. A flood ends when the process exits.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from docker.models.containers import Container

from deeplops.dockerbox import host, stack
from deeplops.dockerbox.engine import edge
from deeplops.dockerbox.sandbox import DockerSandbox
from deeplops.errors import SandboxError
from deeplops.faults import Fault, Repair

_BOXES: dict[str, DockerSandbox] = {}


@edge
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
    """Forget the attached sandbox ``name``, stopping any flood an injection started on it."""
    box = _BOXES.pop(name, None)
    if box is not None:
        box.close()


def slot(box: DockerSandbox, target: str) -> int:
    """The slot of service ``target`` in ``box``, or a SandboxError naming the services."""
    if target not in box.topology.index:
        raise SandboxError(f"unknown service {target!r} in sandbox {box.name!r}: expected one of "
                           f"{', '.join(box.topology.names)}")  # fmt: skip
    return box.topology.index[target]


def inject(name: str, fault: Fault, target: str) -> None:
    """Inject ``fault`` into service ``target`` of the live sandbox ``name``, checked to have taken."""
    box = sandbox(name)
    box.inject(np.array([slot(box, target)]), np.array([int(fault)]))


def repair(name: str, repair: Repair, target: str) -> None:
    """Apply ``repair`` to service ``target`` of the live sandbox ``name``."""
    box = sandbox(name)
    box.repair(np.array([slot(box, target)]), np.array([int(repair)]))


def _ids(containers: Iterable[Container]) -> set[str]:
    return {c.id for c in containers}
