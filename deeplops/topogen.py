"""Seeded random topologies, for training one order policy on many shapes of system.

Services are laid out in layers: data stores and caches at the bottom, entry services on
top, each service calling one to three services below it (at least one in the layer just
below, so every layer is reached). The same seed always gives the same topology.
"""

from __future__ import annotations

import numpy as np

from deeplops.errors import ConfigError
from deeplops.topology import MAX_SERVICES, Service, Topology, build_topology

_DISK_SIZES = (32, 64, 128)


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
    return build_topology(f"random-{seed}", services, source=f"random_topology(seed={seed})")
