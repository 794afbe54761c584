"""The action layout and the policy protocol: roles, action codes, the order mask, the padded graph.

Both sides choose one action per tick from a flat Discrete space laid out per service slot:

- order: ``0`` = noop, ``1 + slot * 4 + (repair - 1)`` for repair in restart, clean_disk,
  rate_limit, recreate (:class:`~deeplops.faults.Repair` codes 1..4);
- chaos: ``0`` = noop, ``1 + slot * 5 + (fault - 1)`` for the five :class:`~deeplops.faults.Fault` codes.

A policy acts for a whole batch at once: ``act(obs, mask)`` takes the batched observation dict of
its role and a ``(n_envs, n_actions)`` bool mask, and returns ``(n_envs,)`` actions. Baselines,
learned agents, frozen opponents, drills and the sidecar all plug in through it. What differs
between the roles (action count, observation space, opponent) is in the tables at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Protocol

import numpy as np
from gymnasium import spaces

from deeplops.faults import (
    FAULTS,
    FAULTS_NEEDING_DATABASE,
    FAULTS_NEEDING_DISK,
    FAULTS_NEEDING_OWN_CODE,
    REPAIRS,
    REPAIRS_NEEDING_DISK,
    Fault,
    Repair,
)
from deeplops.observation import MAX_SLOTS, chaos_observation_space, order_observation_space
from deeplops.topology import Topology

Observation = dict[str, np.ndarray]
"""A batched observation: each value has the envs on its first axis."""


class Role(str, Enum):
    """Which side of the game a policy plays."""

    ORDER = "order"
    CHAOS = "chaos"


class Policy(Protocol):
    """Chooses one action per env, for a batch of envs."""

    name: str
    """Short name for reports, e.g. ``runbook``."""
    role: Role
    """The side it plays."""
    privileged: bool
    """If true, ``obs`` also carries ``faults``: ``(n_envs, MAX_SLOTS)`` true fault codes."""

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Forget the last episode and prepare for ``n_envs`` new ones."""
        ...

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """``(n_envs,)`` int64 actions for a batched observation and action mask."""
        ...


REPAIRS_PER_SLOT = len(REPAIRS)
"""Order actions per service slot: one per repair that acts on a service."""
FAULTS_PER_SLOT = len(FAULTS)
"""Chaos actions per service slot: one per fault."""
N_ORDER_ACTIONS = 1 + MAX_SLOTS * REPAIRS_PER_SLOT
N_CHAOS_ACTIONS = 1 + MAX_SLOTS * FAULTS_PER_SLOT


def order_action(slot: int, repair: Repair) -> int:
    """The order action that applies ``repair`` to ``slot`` (``Repair.NOOP`` gives 0)."""
    return 0 if repair == Repair.NOOP else 1 + slot * REPAIRS_PER_SLOT + int(repair) - 1


def chaos_action(slot: int, fault: Fault) -> int:
    """The chaos action that injects ``fault`` on ``slot``."""
    return 1 + slot * FAULTS_PER_SLOT + int(fault) - 1


def decode_order(action: int) -> tuple[int, Repair]:
    """``(slot, repair)`` of an order action (slot 0 for noop)."""
    if action == 0:
        return 0, Repair.NOOP
    return (action - 1) // REPAIRS_PER_SLOT, Repair(1 + (action - 1) % REPAIRS_PER_SLOT)


def decode_chaos(action: int) -> tuple[int, Fault | None]:
    """``(slot, fault)`` of a chaos action (``(0, None)`` for noop)."""
    if action == 0:
        return 0, None
    return (action - 1) // FAULTS_PER_SLOT, Fault(1 + (action - 1) % FAULTS_PER_SLOT)


def order_actions(slots: np.ndarray, repairs: np.ndarray) -> np.ndarray:
    """:func:`order_action` for arrays: ``repairs[i]`` (codes 1..4) applied to ``slots[i]``."""
    return 1 + slots * REPAIRS_PER_SLOT + repairs - 1


def order_slots(actions: np.ndarray) -> np.ndarray:
    """The slot of each order action in ``actions`` (none of them noop)."""
    return (actions - 1) // REPAIRS_PER_SLOT


def order_mask(topology: Topology, n_envs: int = 1, repairs: Iterable[Repair] = REPAIRS) -> np.ndarray:
    """``(n_envs, N_ORDER_ACTIONS)`` bool, read-only: noop, and each of ``repairs`` on every service
    of ``topology``; padded slots are masked, and so is clean_disk on a service without a volume."""
    mask = np.zeros(N_ORDER_ACTIONS, np.bool_)
    mask[0] = True
    repairs = tuple(repairs)
    for slot in range(topology.n_services):
        for repair in repairs:
            if repair not in REPAIRS_NEEDING_DISK or topology.has_disk[slot]:
                mask[order_action(slot, repair)] = True
    mask.setflags(write=False)
    return np.broadcast_to(mask, (n_envs, N_ORDER_ACTIONS))


def fault_targets(topology: Topology) -> np.ndarray:
    """``(n_services, len(Fault) + 1)`` bool: ``[s, f]`` when service s can take fault f (code 0,
    no fault, never): disk_full only where there is a volume, memory_leak only where our own
    program runs (``faults.FAULTS_NEEDING_OWN_CODE``), conn_leak only at a client of a PostgreSQL
    server (``faults.FAULTS_NEEDING_DATABASE``)."""
    takes = np.zeros((topology.n_services, len(Fault) + 1), np.bool_)
    for fault in Fault:
        takes[:, fault] = True
        if fault in FAULTS_NEEDING_DISK:
            takes[:, fault] &= topology.has_disk
        if fault in FAULTS_NEEDING_OWN_CODE:
            takes[:, fault] &= topology.own_code
        if fault in FAULTS_NEEDING_DATABASE:
            takes[:, fault] &= topology.leaks_at >= 0
    return takes


def padded_adjacency(topology: Topology, n_envs: int = 1) -> np.ndarray:
    """``(n_envs, MAX_SLOTS, MAX_SLOTS)`` int8, read-only: the observation's ``adjacency``,
    ``[e, i, j] = 1`` when service i depends on j; padded slots have no edges."""
    n = topology.n_services
    adjacency = np.zeros((MAX_SLOTS, MAX_SLOTS), np.int8)
    adjacency[:n, :n] = topology.adjacency
    return np.broadcast_to(adjacency, (n_envs, MAX_SLOTS, MAX_SLOTS))


N_ACTIONS: dict[Role, int] = {Role.ORDER: N_ORDER_ACTIONS, Role.CHAOS: N_CHAOS_ACTIONS}
"""Size of each role's Discrete action space."""
OBSERVATION_SPACE: dict[Role, Callable[[], spaces.Dict]] = {
    Role.ORDER: order_observation_space,
    Role.CHAOS: chaos_observation_space,
}
"""Each role's observation space (a new object per call)."""
OPPONENT: dict[Role, Role] = {Role.ORDER: Role.CHAOS, Role.CHAOS: Role.ORDER}
"""The side each role plays against."""
