"""Seeded random topologies, for training one order policy on many shapes of system.

Services are laid out in layers: data stores and caches at the bottom, entry services on
top, each service calling one to three services below it (at least one in the layer just
below, so every layer is reached). The same seed always gives the same topology.

Some topologies then run real software (docs/design.md §4.1): each service gets the kind that can
stand where it is — PostgreSQL or Redis at the bottom, nginx at an entry in front of one HTTP
service, a worker where a service only drains a queue, the web app elsewhere — and a few stay
generic. Kinds come from a stream of their own, so a seed's shape is the same with or without them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from deeplops.errors import ConfigError
from deeplops.topology import HTTP_KINDS, MAX_SERVICES, PLACEMENT, Service, Topology, build_topology

_DISK_SIZES = (32, 64, 128)
REAL_SHARE = 0.5
"""Share of random topologies that run real software (kinds other than ``service``)."""
GENERIC_SHARE = 0.2
"""Share of the services of such a topology that stay generic, as real stacks mix in their own."""
_KIND_STREAM = 1
"""Second word of the kinds' seed: a stream apart from the shape's."""


def random_topology(
    seed: int, n_services: int | None = None, min_services: int = 3, max_services: int = 12
) -> Topology:
    """A random valid topology named ``random-SEED``.

    Args:
        seed: Seed of the shape; the same seed gives the same topology.
        n_services: Exact size; drawn from ``[min_services, max_services]`` when None.
        min_services: Smallest size drawn.
        max_services: Largest size drawn (at most 16).
    """
    if not 2 <= min_services <= max_services <= MAX_SERVICES:
        raise ConfigError(
            f"expected 2 <= min_services <= max_services <= {MAX_SERVICES}, got {min_services} and {max_services}"
        )
    rng = np.random.default_rng(seed)
    n = int(rng.integers(min_services, max_services + 1)) if n_services is None else n_services
    if not 2 <= n <= MAX_SERVICES:
        raise ConfigError(f"n_services must be in [2, {MAX_SERVICES}], got {n}")
    n_layers = int(rng.integers(2, min(5, n) + 1))
    # Every layer gets one service, the rest are spread at random; entries are the top layer.
    layer_of = np.sort(np.concatenate([np.arange(n_layers), rng.integers(0, n_layers, n - n_layers)]))
    names: list[str] = []
    services: list[Service] = []
    for i, layer in enumerate(layer_of):
        below = [k for k in range(i) if layer_of[k] < layer]
        just_below = [k for k in below if layer_of[k] == layer - 1]
        deps: list[int] = []
        if layer > 0:
            deps = [int(rng.choice(just_below))]
            others = [k for k in below if k not in deps]
            extra = min(len(others), int(rng.integers(0, 3)))
            deps += [int(k) for k in rng.choice(others, size=extra, replace=False)] if extra else []
        top = layer == n_layers - 1
        if layer == 0:
            has_disk = rng.random() < 0.6
            prefix = "db" if has_disk else "cache"
        else:
            has_disk = rng.random() < 0.15
            prefix = "edge" if top else "svc"
        names.append(f"{prefix}{i}")
        services.append(
            Service(
                name=names[-1],
                depends_on=tuple(names[k] for k in sorted(deps)),
                entry=bool(top),
                disk_mb=int(rng.choice(_DISK_SIZES)) if has_disk else 0,
            )
        )
    kinds_rng = np.random.default_rng([seed, _KIND_STREAM])
    if kinds_rng.random() < REAL_SHARE:
        services = _with_kinds(services, kinds_rng)
    return build_topology(f"random-{seed}", services, source=f"random_topology(seed={seed})")


def _with_kinds(services: list[Service], rng: np.random.Generator) -> list[Service]:
    """``services`` (dependencies first) with the kind of real software that can stand where each is."""
    kinds: dict[str, str] = {}
    called = {d for s in services for d in s.depends_on}
    for s in services:
        below = [kinds[d] for d in s.depends_on]
        if rng.random() < GENERIC_SHARE:
            kind = "service"
        elif not below:
            kind = "postgres" if s.disk_mb >= PLACEMENT["postgres"].disk_mb[0] else "redis"
        elif s.entry and len(below) == 1 and below[0] in HTTP_KINDS and not s.disk_mb:
            kind = "nginx"
        elif not s.entry and s.name not in called and "redis" in below and set(below) <= {"redis", "postgres"}:
            kind = "worker"  # nothing calls it and it calls only stores: it drains a queue
        else:
            kind = "app"
        kinds[s.name] = kind
    return [replace(s, kind=kinds[s.name]) for s in services]
