"""The chaos-versus-order game over a Sandbox: actions, budget, masks, rewards, metrics.

Each step: chaos acts, order acts, the system advances one tick, health is observed.
Both agents choose one action per tick from a flat Discrete space laid out per service slot:

- order: ``0`` = noop, ``1 + slot * 4 + (repair - 1)`` for repair in restart, clean_disk,
  rate_limit, recreate (:class:`~deeplops.faults.Repair` codes 1..4);
- chaos: ``0`` = noop, ``1 + slot * 5 + (fault - 1)`` for the five :class:`~deeplops.faults.Fault` codes.

A masked (invalid) action is played as a noop and counted. The game is backend-agnostic: it
reads faults, health and the SLO from the sandbox, and keeps its books in compiled kernels so
that one env costs a few microseconds per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from deeplops.errors import ConfigError
from deeplops.faults import FAULT_COST_TABLE, FAULTS, REPAIR_COST_TABLE, REPAIRS, Fault, Repair
from deeplops.metrics import EpisodeStats
from deeplops.observation import MAX_SLOTS
from deeplops.policies import Policy, Role
from deeplops.sandbox import Sandbox

N_ORDER_ACTIONS = 1 + MAX_SLOTS * len(REPAIRS)
N_CHAOS_ACTIONS = 1 + MAX_SLOTS * len(FAULTS)
_NR, _NF = len(REPAIRS), len(FAULTS)
_DISK_FULL, _CLEAN_DISK, _RECREATE = int(Fault.DISK_FULL), int(Repair.CLEAN_DISK), int(Repair.RECREATE)

# Columns of the per-env statistics array.
TICKS, SLO_TICKS, INJECTED, RECOVERED, MTTR_SUM, REPAIRS_TAKEN, WASTED, DATA_LOSS, INVALID = range(9)
_N_STATS = 9
_INJECTS, _REPAIRS = 1, 2  # bits of what _admit found to do


def order_action(slot: int, repair: Repair) -> int:
    """The order action that applies ``repair`` to ``slot`` (``Repair.NOOP`` gives 0)."""
    return 0 if repair == Repair.NOOP else 1 + slot * _NR + int(repair) - 1


def chaos_action(slot: int, fault: Fault) -> int:
    """The chaos action that injects ``fault`` on ``slot``."""
    return 1 + slot * _NF + int(fault) - 1


def decode_order(action: int) -> tuple[int, Repair]:
    """``(slot, repair)`` of an order action (slot 0 for noop)."""
    return (0, Repair.NOOP) if action == 0 else ((action - 1) // _NR, Repair(1 + (action - 1) % _NR))


def decode_chaos(action: int) -> tuple[int, Fault | None]:
    """``(slot, fault)`` of a chaos action (``(0, None)`` for noop)."""
    return (0, None) if action == 0 else ((action - 1) // _NF, Fault(1 + (action - 1) % _NF))


@dataclass(frozen=True)
class GameConfig:
    """Rules of the game: episode length, the chaos budget, reward weights."""

    max_ticks: int = 200
    """Ticks per episode; episodes are truncated there (there is no terminal state)."""
    max_concurrent: int = 2
    """Most faults open at once (injected and not yet recovered)."""
    budget: float = 10.0
    """Fault cost points the chaos agent may spend per episode (costs in faults.FAULT_COST)."""
    health_weight: float = 0.2
    """Weight of the fraction of healthy services in the order reward; the SLO has the rest."""
    fault_cost_weight: float = 0.02
    """Chaos reward paid per fault cost point, so faults are spent where they hurt."""

    def __post_init__(self) -> None:
        if self.max_ticks < 1:
            raise ConfigError(f"max_ticks must be >= 1, got {self.max_ticks}")
        if self.max_concurrent < 0 or self.budget < 0:
            raise ConfigError(f"max_concurrent and budget must be >= 0, got {self.max_concurrent}, {self.budget}")
        if not 0.0 <= self.health_weight <= 1.0:
            raise ConfigError(f"health_weight must be in [0, 1], got {self.health_weight}")


class Game:
    """``n_envs`` games played in lock step on one sandbox."""

    def __init__(self, sandbox: Sandbox, config: GameConfig | None = None) -> None:
        self.sandbox = sandbox
        self.config = config or GameConfig()
        self.topology = sandbox.topology
        e, n = sandbox.n_envs, sandbox.topology.n_services
        self.n_envs = e
        self.tick = 0
        self.budget_left = np.zeros(e)
        self.fault_start = np.full((e, n), -1, np.int32)
        self.stats = np.zeros((e, _N_STATS))
        self.mttr_hist = np.zeros((e, self.config.max_ticks + 1), np.int32)
        self.order_reward = np.zeros(e)
        self.chaos_reward = np.zeros(e)
        self.chaos_slot = np.zeros(e, np.int64)
        self.chaos_fault = np.zeros(e, np.int64)
        self.order_slot = np.zeros(e, np.int64)
        self.order_repair = np.zeros(e, np.int64)
        self.cleared = np.zeros(e, np.bool_)
        self._nothing_cleared = np.zeros(e, np.bool_)
        self._has_disk = self.topology.has_disk.copy()
        self._chaos_mask = np.zeros((e, N_CHAOS_ACTIONS), np.bool_)
        self._order_mask = np.broadcast_to(_static_order_mask(self.topology.has_disk), (e, N_ORDER_ACTIONS))
        adjacency = np.zeros((MAX_SLOTS, MAX_SLOTS), np.int8)
        adjacency[:n, :n] = self.topology.adjacency
        self._adjacency = np.broadcast_to(adjacency, (e, MAX_SLOTS, MAX_SLOTS))
        self._faulted = np.zeros((e, MAX_SLOTS), np.float32)
        self._budget_obs = np.zeros((e, 2), np.float32)
        # Built once: the arrays behind them are updated in place every tick.
        self._order_obs = {"services": sandbox.observe(), "adjacency": self._adjacency}
        self._chaos_obs = {**self._order_obs, "faulted": self._faulted, "budget": self._budget_obs}

    def reset(self, seeds: Sequence[int]) -> None:
        """Start a new episode in every env."""
        self.sandbox.reset(seeds)
        self.tick = 0
        self.budget_left[:] = self.config.budget
        self.fault_start[:] = -1
        self.stats[:] = 0.0
        self.mttr_hist[:] = 0
        self.order_reward[:] = 0.0
        self.chaos_reward[:] = 0.0
        self._faulted[:] = 0.0
        self._budget_obs[:] = 1.0

    def step(self, chaos_actions: np.ndarray, order_actions: np.ndarray) -> bool:
        """Play one tick; return whether the episode is over (truncated) in every env."""
        cfg = self.config
        acts = _admit(
            self.tick, chaos_actions, order_actions, self.fault_start, self._has_disk,
            self.topology.n_services, self.budget_left, FAULT_COST_TABLE, cfg.max_concurrent,
            self.chaos_slot, self.chaos_fault, self.order_slot, self.order_repair, self.stats,
        )  # fmt: skip
        if acts & _INJECTS:
            self.sandbox.inject(self.chaos_slot, self.chaos_fault)
        if acts & _REPAIRS:
            self.cleared = self.sandbox.repair(self.order_slot, self.order_repair)
        else:
            self.cleared = self._nothing_cleared
        self.sandbox.advance()
        _account(
            self.tick, self.sandbox.faults, self.sandbox.health, self.sandbox.slo, self.fault_start,
            self.chaos_fault, self.order_slot, self.order_repair, self.cleared, self._has_disk,
            self.stats, self.mttr_hist, FAULT_COST_TABLE, REPAIR_COST_TABLE, cfg.health_weight,
            cfg.fault_cost_weight, self.order_reward, self.chaos_reward, self.budget_left, cfg.budget,
            cfg.max_concurrent, self._faulted, self._budget_obs,
        )  # fmt: skip
        self.tick += 1
        return self.tick >= cfg.max_ticks

    def order_mask(self) -> np.ndarray:
        """``(n_envs, N_ORDER_ACTIONS)`` bool: padded slots and clean_disk without a volume are masked."""
        return self._order_mask

    def chaos_mask(self) -> np.ndarray:
        """``(n_envs, N_CHAOS_ACTIONS)`` bool: padded or already-faulted slots, disk_full without a
        volume, and faults over the budget or the concurrency cap are masked."""
        _chaos_mask(self.fault_start, self._has_disk, self.budget_left, FAULT_COST_TABLE,
                    self.config.max_concurrent, self._chaos_mask)  # fmt: skip
        return self._chaos_mask

    def order_obs(self) -> dict[str, np.ndarray]:
        """The order agent's observation for every env: views updated in place each tick; do not modify."""
        return self._order_obs

    def chaos_obs(self) -> dict[str, np.ndarray]:
        """The chaos agent's observation for every env: views updated in place each tick; do not modify."""
        return self._chaos_obs

    def decide(self, policy: Policy) -> np.ndarray:
        """``policy``'s actions in every env, from its side's observation and mask; a privileged
        policy also sees the true faults (``obs["faults"]``)."""
        if policy.role == Role.ORDER:
            obs, mask = self._order_obs, self.order_mask()
        else:
            obs, mask = self._chaos_obs, self.chaos_mask()
        if policy.privileged:
            obs = {**obs, "faults": self.truth()}
        return policy.act(obs, mask)

    def truth(self) -> np.ndarray:
        """``(n_envs, MAX_SLOTS)`` int64: the active fault per slot, for privileged policies."""
        out = np.zeros((self.n_envs, MAX_SLOTS), np.int64)
        out[:, : self.topology.n_services] = self.sandbox.faults
        return out

    def episode_totals(self) -> dict[str, np.ndarray]:
        """Headline figures of each env's episode so far, as ``(n_envs,)`` arrays (cheap)."""
        st = self.stats
        return {
            "availability": st[:, SLO_TICKS] / np.maximum(st[:, TICKS], 1),
            "faults_injected": st[:, INJECTED].astype(np.int64),
            "faults_recovered": st[:, RECOVERED].astype(np.int64),
            "unrecovered": (self.fault_start >= 0).sum(axis=1),
            "mttr_sum": st[:, MTTR_SUM].copy(),
            "repairs": st[:, REPAIRS_TAKEN].astype(np.int64),
            "wasted_repairs": st[:, WASTED].astype(np.int64),
        }

    def episode_stats(self) -> list[EpisodeStats]:
        """What each env's episode measured so far."""
        out = []
        for e in range(self.n_envs):
            row = self.stats[e]
            hist = self.mttr_hist[e]
            out.append(
                EpisodeStats(
                    ticks=int(row[TICKS]),
                    slo_ticks=int(row[SLO_TICKS]),
                    faults_injected=int(row[INJECTED]),
                    faults_recovered=int(row[RECOVERED]),
                    unrecovered=int((self.fault_start[e] >= 0).sum()),
                    mttrs=tuple(int(m) for m in np.repeat(np.arange(hist.size), hist)),
                    repairs=int(row[REPAIRS_TAKEN]),
                    wasted_repairs=int(row[WASTED]),
                    data_loss=int(row[DATA_LOSS]),
                    invalid_actions=int(row[INVALID]),
                )
            )
        return out


def _static_order_mask(has_disk: np.ndarray) -> np.ndarray:
    mask = np.zeros(N_ORDER_ACTIONS, np.bool_)
    mask[0] = True
    for slot in range(has_disk.size):
        for repair in REPAIRS:
            if repair != Repair.CLEAN_DISK or has_disk[slot]:
                mask[order_action(slot, repair)] = True
    mask.setflags(write=False)
    return mask


@njit(cache=True)
def _admit(
    tick, chaos_actions, order_actions, fault_start, has_disk, n, budget_left, fault_cost,
    max_concurrent, c_slot, c_fault, o_slot, o_repair, stats,
):  # fmt: skip
    """Decode both agents' actions, drop the invalid ones, charge the chaos budget.

    Returns bits saying whether any env injects (_INJECTS) or repairs (_REPAIRS), so the
    sandbox is not called for nothing.
    """
    acts = 0
    for e in range(chaos_actions.shape[0]):
        c_slot[e] = 0
        c_fault[e] = 0
        a = chaos_actions[e]
        if a != 0:
            s, f = (a - 1) // _NF, 1 + (a - 1) % _NF
            ok = 0 < a < N_CHAOS_ACTIONS and s < n
            if ok:
                open_faults = 0
                for k in range(n):
                    if fault_start[e, k] >= 0:
                        open_faults += 1
                ok = (
                    fault_start[e, s] < 0
                    and (f != _DISK_FULL or has_disk[s])
                    and fault_cost[f] <= budget_left[e] + 1e-9
                    and open_faults < max_concurrent
                )
            if ok:
                c_slot[e], c_fault[e] = s, f
                acts |= _INJECTS
                fault_start[e, s] = tick
                budget_left[e] -= fault_cost[f]
                stats[e, INJECTED] += 1
            else:
                stats[e, INVALID] += 1
        o_slot[e] = 0
        o_repair[e] = 0
        a = order_actions[e]
        if a != 0:
            s, r = (a - 1) // _NR, 1 + (a - 1) % _NR
            if 0 < a < N_ORDER_ACTIONS and s < n and (r != _CLEAN_DISK or has_disk[s]):
                o_slot[e], o_repair[e] = s, r
                acts |= _REPAIRS
            else:
                stats[e, INVALID] += 1
    return acts


@njit(cache=True)
def _account(
    tick, faults, health, slo, fault_start, c_fault, o_slot, o_repair, cleared, has_disk, stats,
    mttr_hist, fault_cost, repair_cost, health_weight, fault_cost_weight, order_reward, chaos_reward,
    budget_left, budget, max_concurrent, faulted, budget_obs,
):  # fmt: skip
    """After a tick: close recovered faults (MTTR), count repairs, pay rewards, update the
    chaos agent's view of its open faults and remaining budget."""
    n_envs, n = faults.shape
    top = mttr_hist.shape[1] - 1
    for e in range(n_envs):
        healthy = 0
        for s in range(n):
            if health[e, s]:
                healthy += 1
            start = fault_start[e, s]
            if start >= 0 and faults[e, s] == 0 and health[e, s] and slo[e]:
                mttr = tick - start
                stats[e, RECOVERED] += 1
                stats[e, MTTR_SUM] += mttr
                mttr_hist[e, min(mttr, top)] += 1
                fault_start[e, s] = -1
        stats[e, TICKS] += 1
        if slo[e]:
            stats[e, SLO_TICKS] += 1
        r = o_repair[e]
        if r != 0:
            stats[e, REPAIRS_TAKEN] += 1
            if not cleared[e]:
                stats[e, WASTED] += 1
            if r == _RECREATE and has_disk[o_slot[e]]:
                stats[e, DATA_LOSS] += 1
        reward = (1.0 - health_weight) * (1.0 if slo[e] else 0.0) + health_weight * healthy / n
        reward -= repair_cost[r]
        order_reward[e] = reward
        chaos_reward[e] = -reward - fault_cost_weight * fault_cost[c_fault[e]]
        open_faults = 0
        for s in range(n):
            is_open = fault_start[e, s] >= 0
            faulted[e, s] = 1.0 if is_open else 0.0
            open_faults += is_open
        budget_obs[e, 0] = budget_left[e] / budget if budget > 0 else 0.0
        room = max_concurrent - open_faults
        budget_obs[e, 1] = min(1.0, max(0.0, room / max_concurrent)) if max_concurrent > 0 else 0.0


@njit(cache=True)
def _chaos_mask(fault_start, has_disk, budget_left, fault_cost, max_concurrent, mask):  # fmt: skip
    n_envs, n = fault_start.shape
    for e in range(n_envs):
        mask[e, :] = False
        mask[e, 0] = True
        open_faults = 0
        for s in range(n):
            if fault_start[e, s] >= 0:
                open_faults += 1
        if open_faults >= max_concurrent:
            continue
        for s in range(n):
            if fault_start[e, s] >= 0:
                continue
            for f in range(1, _NF + 1):
                if fault_cost[f] <= budget_left[e] + 1e-9 and (f != _DISK_FULL or has_disk[s]):
                    mask[e, 1 + s * _NF + f - 1] = True
