"""StackHandle: what the fault and repair mechanisms act on, one stack's containers, links and floods."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Protocol

import docker
from docker.models.containers import Container

from deeplops.dockerbox.releases import History
from deeplops.topology import Topology


class Rewire(Protocol):
    """What a stack does after one of its containers (re)started, before a mechanism returns."""

    def __call__(self, service: str, resume_flood: bool = False) -> None: ...


@dataclass
class StackHandle:
    """One live stack, as far as the mechanisms (``deeplops.dockerbox.mechanisms``) touch it.

    A deeplops sandbox (``DockerSandbox``) owns one and keeps its addresses, interfaces and floods
    in it; a Compose project watched by the sidecar has only containers (no floods, no deeplops
    network) and its own ``rewire``.
    """

    client: docker.DockerClient
    """The engine the stack runs on."""
    name: str
    """The sandbox's name (its network, container prefix, volume folder and iptables tag), or the
    Compose project's."""
    topology: Topology
    """The stack's services: a recreate starts one from its spec."""
    rewire: Rewire
    """Called after a container (re)started: refresh what depends on it, resume a held flood."""
    containers: dict[str, Container] = field(default_factory=dict)
    """Each service's container, by service name."""
    ips: dict[str, str] = field(default_factory=dict)
    """Each running service's address on the sandbox network."""
    veths: dict[str, str] = field(default_factory=dict)
    """Each running service's host-side interface (its link, capped with tc)."""
    floods: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """The flood process at each service this process flooded."""
    restores: dict[str, int] = field(default_factory=dict)
    """Bytes of data each service recreated by this process is restoring from backup, until
    ``mechanisms.finish_restores`` sees the restore done and checks them back."""
    releases: dict[str, History] = field(default_factory=dict)
    """Each service's release history (``releases``); a service missing here runs its container's
    label's, or the first release."""
    deploys: dict[str, int] = field(default_factory=dict)
    """Release switches (deploys and rollbacks) of each service by this process: a change is a deploy."""
    image: str = ""
    """The image a recreate starts; empty on a stack this process did not build (the replaced
    container's image is used)."""
