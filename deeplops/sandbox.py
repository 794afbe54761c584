"""The Sandbox protocol every backend implements, and the array state backends keep behind it.

A sandbox holds ``n_envs`` copies of one topology and moves them in lock step. It knows
mechanisms (what a SIGKILL or a full disk does), not rules: budgets, rewards and metrics are
the game's (``deeplops.game``). Arrays are shaped ``(n_envs, n_services)``; actions name one
service slot per env, with fault or repair code 0 meaning "nothing". ``observe``, ``faults``,
``health`` and ``slo`` hand over the same arrays tick after tick, updated in place (a backend may
replace them only in ``reset``): the game reads them without asking again. The backends are made
by ``deeplops.backends``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from deeplops.topology import Topology


class Sandbox(Protocol):
    """A batch of running systems that faults and repairs act on, one tick at a time."""

    topology: Topology
    n_envs: int

    def reset(self, seeds: Sequence[int]) -> None:
        """Bring every env to a fresh, healthy system; ``seeds`` has one entry per env."""
        ...

    def inject(self, slots: np.ndarray, faults: np.ndarray) -> None:
        """Start fault ``faults[e]`` (a :class:`Fault` code, 0 for none) on service ``slots[e]``."""
        ...

    def repair(self, slots: np.ndarray, repairs: np.ndarray) -> np.ndarray:
        """Apply repair ``repairs[e]`` to ``slots[e]``; return ``(n_envs,)`` bool: a fault was ended."""
        ...

    def advance(self) -> None:
        """Let one tick pass (one second on a real backend) and measure the system."""
        ...

    def observe(self) -> np.ndarray:
        """``(n_envs, MAX_SLOTS, N_FEATURES)`` float32 symptoms of the last tick (see observation.py)."""
        ...

    @property
    def faults(self) -> np.ndarray:
        """``(n_envs, n_services)`` int8: the fault active on each service (0 = none). Ground truth."""
        ...

    @property
    def health(self) -> np.ndarray:
        """``(n_envs, n_services)`` bool: the true result of each /health probe this tick."""
        ...

    @property
    def slo(self) -> np.ndarray:
        """``(n_envs,)`` bool: whether user traffic through every entry service succeeded this tick."""
        ...

    def close(self) -> None:
        """Release everything the sandbox holds. Safe to call twice."""
        ...


class ArrayState:
    """The read side of the Sandbox protocol, over the arrays a backend keeps its state in.

    A backend sets ``_feats`` ``(n_envs, MAX_SLOTS, N_FEATURES)`` float32, ``_fault`` ``(n_envs,
    n_services)`` int8, ``_health`` ``(n_envs, n_services)`` bool and ``_slo`` ``(n_envs,)`` bool,
    and updates them in place.
    """

    _feats: np.ndarray
    _fault: np.ndarray
    _health: np.ndarray
    _slo: np.ndarray

    def observe(self) -> np.ndarray:
        """Symptoms of the last tick; overwritten by the next ``advance``."""
        return self._feats

    @property
    def faults(self) -> np.ndarray:
        """The fault open on each service (0 = none): injected, and not yet ended by a repair."""
        return self._fault

    @property
    def health(self) -> np.ndarray:
        """Result of each service's /health in the last tick."""
        return self._health

    @property
    def slo(self) -> np.ndarray:
        """Whether user traffic through every entry service succeeded in the last tick, per env."""
        return self._slo
