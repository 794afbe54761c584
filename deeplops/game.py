"""The chaos-versus-order game over a Sandbox: budget, masks, rewards, metrics, per role.

Each step: chaos acts, order acts, the system advances one tick, health is observed. Both agents
choose one action per tick in the layout of :mod:`deeplops.actions`; a masked (invalid) action is
played as a noop and counted. A script may add more faults to the chaos side's tick (a correlated
failure, such as a host going down): ``step``'s ``extra_chaos``, each admitted as an action is.
The game answers each role's observation, mask and reward (``observe``, ``mask``, ``reward``),
so the environments that face one side need not know which.
It is backend-agnostic: it reads faults, health and the SLO from the sandbox, and keeps its books
in compiled kernels so that one env costs a few microseconds per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from deeplops.actions import (
    FAULTS_PER_SLOT,
    N_CHAOS_ACTIONS,
    N_ORDER_ACTIONS,
    REPAIRS_PER_SLOT,
    Observation,
    Policy,
    Role,
    fault_targets,
    order_mask,
    padded_adjacency,
)
from deeplops.errors import ConfigError
from deeplops.faults import FAULT_COST_TABLE, REPAIR_COST_TABLE, Fault, Repair
from deeplops.kernels import checked_array, compiled_for
from deeplops.metrics import EpisodeStats
from deeplops.observation import MAX_SLOTS
from deeplops.sandbox import Sandbox

_RECREATE = int(Repair.RECREATE)
_INT64, _BOOL = np.dtype(np.int64), np.dtype(np.bool_)  # built once: numpy converts a type each call

# Columns of the per-env statistics array.
TICKS, SLO_TICKS, INJECTED, RECOVERED, MTTR_SUM, REPAIRS_TAKEN, WASTED, DATA_LOSS, INVALID, RELAPSES = range(10)
_N_STATS = 10
# Where each open fault is in its relief and relapse (docs/design.md §4.2, durability): no symptom
# yet, symptoms seen, a repair taken since, symptoms gone with the cause still there (relieved).
_QUIET, _SYMPTOMS, _REPAIRED, _RELIEVED = 0, 1, 2, 3
_INJECTS, _REPAIRS = 1, 2  # bits of what _admit found to do


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
        self._batch = (e,)
        self.tick = 0
        self.budget_left = np.zeros(e)
        self.fault_start = np.full((e, n), -1, np.int32)
        self.stats = np.zeros((e, _N_STATS))
        self.mttr_hist = np.zeros((e, self.config.max_ticks + 1), np.int32)
        self.relief = np.zeros((e, n), np.int8)
        self.order_reward = np.zeros(e)
        self.chaos_reward = np.zeros(e)
        self.chaos_slot = np.zeros(e, np.int64)
        self.chaos_fault = np.zeros(e, np.int64)
        self.chaos_cost = np.zeros(e)
        self._no_extra = np.zeros((0, e), np.int64)
        self.extra_slot = self.extra_fault = self._no_extra
        self._no_orders = np.zeros(e, np.int64)
        self._scratch_slot = np.zeros(e, np.int64)
        self._scratch_repair = np.zeros(e, np.int64)
        self.order_slot = np.zeros(e, np.int64)
        self.order_repair = np.zeros(e, np.int64)
        self.cleared = np.zeros(e, np.bool_)
        self._nothing_cleared = np.zeros(e, np.bool_)
        self._has_disk = self.topology.has_disk.copy()
        self._chaos_mask = np.zeros((e, N_CHAOS_ACTIONS), np.bool_)
        # What each row of the chaos mask was last filled from (NaN: never filled).
        self._mask_open = np.zeros((e, n), np.bool_)
        self._mask_budget = np.full(e, np.nan)
        self._order_mask = order_mask(self.topology, e)
        self._adjacency = padded_adjacency(self.topology, e)
        self._faulted = np.zeros((e, MAX_SLOTS), np.float32)
        self._budget_obs = np.zeros((e, 2), np.float32)
        # Built once: the arrays behind them are updated in place every tick.
        self._order_obs = {"services": sandbox.observe(), "adjacency": self._adjacency}
        self._chaos_obs = {**self._order_obs, "faulted": self._faulted, "budget": self._budget_obs}
        self._views = {Role.ORDER: self._order_obs, Role.CHAOS: self._chaos_obs}
        self._rewards = {Role.ORDER: self.order_reward, Role.CHAOS: self.chaos_reward}
        # The kernels' records, over the arrays above (which they update in place), and the
        # kernels compiled once for their types (deeplops.kernels says why).
        self._books = Books(self.fault_start, self.budget_left, self.stats, self.mttr_hist, self.relief)
        self._admitted = Admitted(
            self.chaos_slot, self.chaos_fault, self.order_slot, self.order_repair, self.chaos_cost
        )
        self._outcome = Outcome(self.order_reward, self.chaos_reward, self._faulted, self._budget_obs)
        cfg = self.config
        self._rules = GameRules(
            n_services=n,
            has_disk=self._has_disk,
            valid_orders=self._order_mask[0],
            fault_cost=FAULT_COST_TABLE,
            takes=fault_targets(self.topology),
            repair_cost=REPAIR_COST_TABLE,
            max_concurrent=cfg.max_concurrent,
            budget=float(cfg.budget),
            health_weight=float(cfg.health_weight),
            fault_cost_weight=float(cfg.fault_cost_weight),
        )
        self._measured = _measured(sandbox)
        actions = np.zeros(e, np.int64)
        self._admit = compiled_for(_admit, 0, actions, actions, self._books, self._rules, self._admitted)
        self._account = compiled_for(
            _account, 0, self._measured, self.cleared, self._books, self._rules, self._admitted, self._outcome
        )
        self._fill_chaos_mask = compiled_for(
            _chaos_mask, self._books, self._rules, self._chaos_mask, self._mask_open, self._mask_budget
        )

    def reset(self, seeds: Sequence[int]) -> None:
        """Start a new episode in every env."""
        self.sandbox.reset(seeds)
        if not _still(self._measured, self.sandbox):
            self._measured = _measured(self.sandbox)
        self.tick = 0
        self.budget_left[:] = self.config.budget
        self.fault_start[:] = -1
        self.relief[:] = _QUIET
        self.stats[:] = 0.0
        self.mttr_hist[:] = 0
        self.order_reward[:] = 0.0
        self.chaos_reward[:] = 0.0
        self._faulted[:] = 0.0
        self._budget_obs[:] = 1.0

    def step(self, chaos_actions: np.ndarray, order_actions: np.ndarray, extra_chaos: np.ndarray | None = None) -> bool:
        """Play one tick; return whether the episode is over (truncated) in every env.

        ``extra_chaos``, ``(n_envs, k)``: more chaos actions of the same tick (0: none), admitted
        after ``chaos_actions``, column by column, each as a chaos action is (checked against the
        open faults, this tick's included, the budget and the concurrency cap; a refused one is
        counted invalid) and injected in the same tick, before the order side's repair.
        """
        batch = self._batch
        chaos_actions = checked_array(chaos_actions, _INT64, batch)
        order_actions = checked_array(order_actions, _INT64, batch)
        acts = self._admit(self.tick, chaos_actions, order_actions, self._books, self._rules, self._admitted)
        if acts & _INJECTS:
            self.sandbox.inject(self.chaos_slot, self.chaos_fault)
        if extra_chaos is None:
            self.extra_slot = self.extra_fault = self._no_extra
        else:
            self._play_extra(extra_chaos)
        if acts & _REPAIRS:
            self.cleared = checked_array(self.sandbox.repair(self.order_slot, self.order_repair), _BOOL, batch)
        else:
            self.cleared = self._nothing_cleared
        self.sandbox.advance()
        self._account(self.tick, self._measured, self.cleared, self._books, self._rules, self._admitted, self._outcome)
        self.tick += 1
        return self.tick >= self.config.max_ticks

    def _play_extra(self, extra_chaos: np.ndarray) -> None:
        """Admit and inject ``step``'s ``extra_chaos`` column by column, each as ``_admit`` admits
        ``chaos_actions``, into ``extra_slot`` and ``extra_fault``, adding their cost to ``chaos_cost``."""
        shape = np.shape(extra_chaos)
        if len(shape) != 2 or shape[0] != self.n_envs:
            raise ValueError(f"extra_chaos: expected an array of shape ({self.n_envs}, k), got shape {shape}")
        columns = np.ascontiguousarray(checked_array(extra_chaos, _INT64, shape).T)
        self.extra_slot = np.zeros(columns.shape, np.int64)
        self.extra_fault = np.zeros(columns.shape, np.int64)
        cost = np.zeros(self.n_envs)
        for actions, slots, faults in zip(columns, self.extra_slot, self.extra_fault, strict=True):
            # The order side's part of the record is scratch: its repair was admitted already.
            admitted = Admitted(slots, faults, self._scratch_slot, self._scratch_repair, cost)
            if self._admit(self.tick, actions, self._no_orders, self._books, self._rules, admitted) & _INJECTS:
                self.sandbox.inject(slots, faults)
            self.chaos_cost += cost

    def injected(self, env: int) -> list[tuple[int, Fault]]:
        """``(slot, fault)`` of every fault injected in env ``env`` in the last tick, in the order played."""
        played = [(self.chaos_slot[env], self.chaos_fault[env])]
        played += zip(self.extra_slot[:, env], self.extra_fault[:, env], strict=True)
        return [(int(s), Fault(int(f))) for s, f in played if f]

    def play(self, role: Role, actions: np.ndarray, opponent_actions: np.ndarray) -> bool:
        """``step`` with ``role`` playing ``actions`` and its opponent ``opponent_actions``."""
        if _CHAOS_FIRST[role]:
            return self.step(actions, opponent_actions)
        return self.step(opponent_actions, actions)

    def observe(self, role: Role) -> Observation:
        """``role``'s observation for every env (``order_obs`` or ``chaos_obs``): views updated in
        place each tick; do not modify."""
        return self._views[role]

    def mask(self, role: Role) -> np.ndarray:
        """``role``'s valid actions in every env (``order_mask`` or ``chaos_mask``)."""
        return _MASK[role](self)

    def reward(self, role: Role) -> np.ndarray:
        """``(n_envs,)``: ``role``'s reward for the last tick (``order_reward`` or ``chaos_reward``),
        updated in place each tick."""
        return self._rewards[role]

    def order_mask(self) -> np.ndarray:
        """``(n_envs, N_ORDER_ACTIONS)`` bool: padded slots and clean_disk without a volume are masked."""
        return self._order_mask

    def chaos_mask(self) -> np.ndarray:
        """``(n_envs, N_CHAOS_ACTIONS)`` bool: padded or already-faulted slots, disk_full without a
        volume, and faults over the budget or the concurrency cap are masked."""
        self._fill_chaos_mask(self._books, self._rules, self._chaos_mask, self._mask_open, self._mask_budget)
        return self._chaos_mask

    def order_obs(self) -> dict[str, np.ndarray]:
        """The order agent's observation for every env: views updated in place each tick; do not modify."""
        return self._order_obs

    def chaos_obs(self) -> dict[str, np.ndarray]:
        """The chaos agent's observation for every env: views updated in place each tick; do not modify."""
        return self._chaos_obs

    def decide(self, policy: Policy) -> np.ndarray:
        """``policy``'s actions in every env, from its side's observation and mask; a privileged
        policy also sees the true faults (``obs["faults"]``) and, where the backend knows them,
        the ticks each repair would keep each service from serving (``obs["downtime"]``,
        ``(n_envs, MAX_SLOTS, len(Repair))``)."""
        obs, mask = self._views[policy.role], _MASK[policy.role](self)
        if policy.privileged:
            obs = {**obs, "faults": self.truth()}
            downtime = getattr(self.sandbox, "downtime", None)
            if downtime is not None:
                padded = np.zeros((self.n_envs, MAX_SLOTS, len(Repair)), np.int64)
                padded[:, : self.topology.n_services] = downtime()
                obs["downtime"] = padded
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
            "relapses": st[:, RELAPSES].astype(np.int64),
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
                    relapses=int(row[RELAPSES]),
                    mttrs=tuple(int(m) for m in np.repeat(np.arange(hist.size), hist)),
                    repairs=int(row[REPAIRS_TAKEN]),
                    wasted_repairs=int(row[WASTED]),
                    data_loss=int(row[DATA_LOSS]),
                    invalid_actions=int(row[INVALID]),
                )
            )
        return out


_MASK: dict[Role, Callable[[Game], np.ndarray]] = {Role.ORDER: Game.order_mask, Role.CHAOS: Game.chaos_mask}
"""Each role's mask, by role (a static one for order, one computed each tick for chaos)."""
_CHAOS_FIRST: dict[Role, bool] = {Role.CHAOS: True, Role.ORDER: False}
"""Whether a role's actions are ``step``'s first argument (chaos acts first in a tick)."""


class Books(NamedTuple):
    """Each env's episode so far, kept in place by the kernels."""

    fault_start: np.ndarray
    """``(n_envs, n_services)`` int32: the tick each open fault was injected at (-1: none open)."""
    budget_left: np.ndarray
    """``(n_envs,)`` float64: fault cost points the chaos agent has left."""
    stats: np.ndarray
    """``(n_envs, _N_STATS)`` float64: the episode's counts, in the columns TICKS .. INVALID."""
    mttr_hist: np.ndarray
    """``(n_envs, max_ticks + 1)`` int32: faults recovered, by their time to recover in ticks."""
    relief: np.ndarray
    """``(n_envs, n_services)`` int8: each open fault's way through relief and relapse (_QUIET ..)."""


class GameRules(NamedTuple):
    """The rules of the game and what the topology allows, as the kernels read them."""

    n_services: int
    """Services in the topology (slots from here on are padding)."""
    has_disk: np.ndarray
    """``(n_services,)`` bool: services with a volume (only they take disk_full, clean_disk)."""
    valid_orders: np.ndarray
    """``(N_ORDER_ACTIONS,)`` bool: the order actions the topology allows (the static order mask)."""
    fault_cost: np.ndarray
    """``(len(Fault) + 1,)`` float64: budget points of each fault code (0 for none)."""
    takes: np.ndarray
    """``(n_services, len(Fault) + 1)`` bool: the faults each service can take (``fault_targets``)."""
    repair_cost: np.ndarray
    """``(len(Repair),)`` float64: what each repair costs the order reward."""
    max_concurrent: int
    """Most faults open at once."""
    budget: float
    """Fault cost points per episode."""
    health_weight: float
    """Weight of the fraction of healthy services in the order reward."""
    fault_cost_weight: float
    """Chaos reward paid per fault cost point."""


class Admitted(NamedTuple):
    """The moves admitted this tick, as the sandbox is asked to make them (code 0: none)."""

    chaos_slot: np.ndarray
    """``(n_envs,)`` int64: the slot chaos injects on."""
    chaos_fault: np.ndarray
    """``(n_envs,)`` int64: the Fault code injected."""
    order_slot: np.ndarray
    """``(n_envs,)`` int64: the slot order repairs."""
    order_repair: np.ndarray
    """``(n_envs,)`` int64: the Repair code applied."""
    chaos_cost: np.ndarray
    """``(n_envs,)`` float64: the cost points of every fault injected (``step``'s extra ones included)."""


class Outcome(NamedTuple):
    """What the last tick gave each side: rewards, and the chaos agent's view of its faults and budget."""

    order_reward: np.ndarray
    """``(n_envs,)`` float64: the order agent's reward."""
    chaos_reward: np.ndarray
    """``(n_envs,)`` float64: the chaos agent's reward."""
    faulted: np.ndarray
    """``(n_envs, MAX_SLOTS)`` float32: 1 on each slot with an open fault."""
    budget_obs: np.ndarray
    """``(n_envs, 2)`` float32: the budget left, and the room for more open faults, as fractions."""


class Measured(NamedTuple):
    """The sandbox's measurements of the last tick, as the kernels read them."""

    faults: np.ndarray
    """``(n_envs, n_services)`` int8: the fault open on each service (0 = none)."""
    health: np.ndarray
    """``(n_envs, n_services)`` bool: each service's /health result."""
    slo: np.ndarray
    """``(n_envs,)`` bool: whether user traffic through every entry service succeeded."""


def _measured(sandbox: Sandbox) -> Measured:
    """The sandbox's measurement arrays, checked (and converted if need be) for the kernels."""
    shape = (sandbox.n_envs, sandbox.topology.n_services)
    return Measured(
        faults=checked_array(sandbox.faults, np.int8, shape),
        health=checked_array(sandbox.health, np.bool_, shape),
        slo=checked_array(sandbox.slo, np.bool_, shape[:1]),
    )


def _still(measured: Measured, sandbox: Sandbox) -> bool:
    """Whether ``measured`` still holds the very arrays the sandbox hands over (backends update
    theirs in place, so the check is made once an episode, not every tick)."""
    return sandbox.faults is measured.faults and sandbox.health is measured.health and sandbox.slo is measured.slo


@njit(cache=True)
def _admit(
    tick: int, chaos_actions: np.ndarray, order_actions: np.ndarray, books: Books, rules: GameRules, admitted: Admitted
) -> int:
    """Decode both agents' actions into ``admitted``, drop the invalid ones, charge the chaos budget.

    Order actions are checked against ``rules.valid_orders``, the static order mask.

    Returns bits saying whether any env injects (_INJECTS) or repairs (_REPAIRS), so the
    sandbox is not called for nothing.
    """
    fault_start, budget_left, stats = books.fault_start, books.budget_left, books.stats
    n, fault_cost, max_concurrent = rules.n_services, rules.fault_cost, rules.max_concurrent
    takes, valid_orders = rules.takes, rules.valid_orders
    c_slot, c_fault, c_cost = admitted.chaos_slot, admitted.chaos_fault, admitted.chaos_cost
    o_slot, o_repair = admitted.order_slot, admitted.order_repair
    acts = 0
    for e in range(chaos_actions.shape[0]):
        c_slot[e] = 0
        c_fault[e] = 0
        c_cost[e] = 0.0
        a = chaos_actions[e]
        if a != 0:
            s, f = (a - 1) // FAULTS_PER_SLOT, 1 + (a - 1) % FAULTS_PER_SLOT
            ok = 0 < a < N_CHAOS_ACTIONS and s < n
            if ok:
                open_faults = 0
                for k in range(n):
                    if fault_start[e, k] >= 0:
                        open_faults += 1
                ok = (
                    fault_start[e, s] < 0
                    and takes[s, f]
                    and fault_cost[f] <= budget_left[e] + 1e-9
                    and open_faults < max_concurrent
                )
            if ok:
                c_slot[e], c_fault[e] = s, f
                c_cost[e] = fault_cost[f]
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
            s, r = (a - 1) // REPAIRS_PER_SLOT, 1 + (a - 1) % REPAIRS_PER_SLOT
            if 0 < a < N_ORDER_ACTIONS and valid_orders[a]:
                o_slot[e], o_repair[e] = s, r
                acts |= _REPAIRS
            else:
                stats[e, INVALID] += 1
    return acts


@njit(cache=True)
def _account(
    tick: int, measured: Measured, cleared: np.ndarray, books: Books, rules: GameRules, admitted: Admitted, out: Outcome
) -> None:
    """After a tick: close recovered faults (MTTR), count relapses and repairs, pay rewards, update
    the chaos agent's view of its open faults and remaining budget. ``cleared[e]``: the repair ended a fault.

    A fault is recovered only when its cause is gone and its service and the SLO are well again. A
    repair that leaves the cause may still end the symptoms (a restart of a leaking release): when
    they come back with the cause still there, that is a relapse.
    """
    faults, health, slo = measured.faults, measured.health, measured.slo
    fault_start, budget_left, stats, mttr_hist = books.fault_start, books.budget_left, books.stats, books.mttr_hist
    relief = books.relief
    has_disk, repair_cost = rules.has_disk, rules.repair_cost
    health_weight, fault_cost_weight = rules.health_weight, rules.fault_cost_weight
    budget, max_concurrent = rules.budget, rules.max_concurrent
    chaos_cost, o_slot, o_repair = admitted.chaos_cost, admitted.order_slot, admitted.order_repair
    order_reward, chaos_reward, faulted, budget_obs = out.order_reward, out.chaos_reward, out.faulted, out.budget_obs
    n_envs, n = faults.shape
    top = mttr_hist.shape[1] - 1
    for e in range(n_envs):
        healthy = 0
        for s in range(n):
            if health[e, s]:
                healthy += 1
            start = fault_start[e, s]
            if start < 0:
                continue
            if faults[e, s] == 0 and health[e, s] and slo[e]:
                mttr = tick - start
                stats[e, RECOVERED] += 1
                stats[e, MTTR_SUM] += mttr
                mttr_hist[e, min(mttr, top)] += 1
                fault_start[e, s] = -1
                relief[e, s] = _QUIET
                continue
            # Relief is what a repair that ended no fault may bring (a restart of a leaking release,
            # or of the database a leaking client exhausts); a repair that ended one (another fault's,
            # whose symptoms this service shared) relieves nothing here. Read on the service's own
            # health, not the SLO, which another fault may hold down; this tick's health is read
            # after its repair, so a repair relieves from the tick it is taken.
            state = relief[e, s]
            if o_repair[e] != 0 and not cleared[e] and state == _SYMPTOMS:
                state = _REPAIRED
            if health[e, s]:
                if state == _REPAIRED:
                    state = _RELIEVED
            elif state == _RELIEVED:
                stats[e, RELAPSES] += 1
                state = _SYMPTOMS
            elif state == _QUIET:
                state = _SYMPTOMS
            relief[e, s] = state
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
        chaos_reward[e] = -reward - fault_cost_weight * chaos_cost[e]
        open_faults = 0
        for s in range(n):
            is_open = fault_start[e, s] >= 0
            faulted[e, s] = 1.0 if is_open else 0.0
            open_faults += is_open
        budget_obs[e, 0] = budget_left[e] / budget if budget > 0 else 0.0
        room = max_concurrent - open_faults
        budget_obs[e, 1] = min(1.0, max(0.0, room / max_concurrent)) if max_concurrent > 0 else 0.0


@njit(cache=True)
def _chaos_mask(
    books: Books, rules: GameRules, mask: np.ndarray, seen_open: np.ndarray, seen_budget: np.ndarray
) -> None:
    """Fill ``mask`` (``(n_envs, N_CHAOS_ACTIONS)``) with the chaos actions allowed now.

    A row depends only on which of its env's services have a fault open and on its budget left,
    which change a few times an episode while the mask is read every tick: only the rows whose
    inputs differ from those they were last filled from (``seen_open``, ``seen_budget``) are
    filled again.
    """
    fault_start, budget_left = books.fault_start, books.budget_left
    takes, fault_cost, max_concurrent = rules.takes, rules.fault_cost, rules.max_concurrent
    n_envs, n = fault_start.shape
    for e in range(n_envs):
        same = seen_budget[e] == budget_left[e]  # never for NaN: a row not filled yet
        s = 0
        while same and s < n:
            same = seen_open[e, s] == (fault_start[e, s] >= 0)
            s += 1
        if same:
            continue
        seen_budget[e] = budget_left[e]
        open_faults = 0
        for s in range(n):
            seen_open[e, s] = fault_start[e, s] >= 0
            open_faults += seen_open[e, s]
        mask[e, :] = False
        mask[e, 0] = True
        if open_faults >= max_concurrent:
            continue
        for s in range(n):
            if seen_open[e, s]:
                continue
            for f in range(1, FAULTS_PER_SLOT + 1):
                if fault_cost[f] <= budget_left[e] + 1e-9 and takes[s, f]:
                    mask[e, 1 + s * FAULTS_PER_SLOT + f - 1] = True
