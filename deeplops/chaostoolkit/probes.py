"""Chaos Toolkit probes: the SLO and a service's health in a live sandbox, measured now.

Both measure the system as the Docker backend does every tick (the dependency-aware /health
probe; user requests through the entry services within the SLO latency).
"""

from __future__ import annotations

from deeplops.dockerbox import attached

__all__ = ["service_healthy", "slo_ok"]


def slo_ok(sandbox: str) -> bool:
    """Whether user requests through every entry service succeed within the SLO latency."""
    box = attached.sandbox(sandbox)
    box.measure()
    return bool(box.slo[0])


def service_healthy(target: str, sandbox: str) -> bool:
    """Whether service ``target`` passes its /health check."""
    box = attached.sandbox(sandbox)
    index = attached.slot(box, target)
    box.measure()
    return bool(box.health[0, index])
