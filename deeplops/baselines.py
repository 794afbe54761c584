"""Baseline policies (docs/design.md §6): what a learned order agent must beat, and simple chaos.

All act on a whole batch with array operations and keep any memory they need (probe counters,
back-off timers) as ``(n_envs, MAX_SLOTS)`` arrays, reset at each episode. One action per env
per tick, as for every policy; when several services need one, the deepest goes first (slots
are in dependency order, so the lowest slot is never a dependent of a higher one).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from deeplops.actions import FAULTS_PER_SLOT, Observation, Role, order_actions, order_slots
from deeplops.faults import CLEARS_TABLE, PROPER_REPAIR_TABLE, REPAIR_COST_TABLE, Repair
from deeplops.observation import MAX_SLOTS, SINCE_REPAIR_SCALE, Feature


def _first_rule(rules: list[tuple[np.ndarray, Repair]], n_envs: int) -> np.ndarray:
    """Actions from the first rule with a candidate, in priority order; noop where none fires.

    Each rule is ``(candidates, repair)`` with candidates ``(n_envs, MAX_SLOTS)`` bool; within a
    rule the lowest (deepest) slot wins.
    """
    stacked = np.stack([candidates for candidates, _ in rules], axis=1).reshape(n_envs, -1)
    first = stacked.argmax(axis=1)
    rule, slot = np.divmod(first, MAX_SLOTS)
    repair = _codes(tuple(r for _, r in rules))[rule]
    return np.where(stacked.any(axis=1), order_actions(slot, repair), 0).astype(np.int64)


@functools.cache
def _codes(repairs: tuple[Repair, ...]) -> np.ndarray:
    """The repairs' codes as an array (made once per list of rules: the baselines act every tick)."""
    return np.array([int(r) for r in repairs])


class _Symptoms:
    """Boolean readings of a batched order observation, as the rule-based baselines use them."""

    def __init__(self, obs: Observation) -> None:
        s = obs["services"]
        self.present = s[..., Feature.PRESENT] > 0.5
        self.healthy = s[..., Feature.HEALTHY] > 0.5
        self.running = s[..., Feature.RUNNING] > 0.5
        self.disk = s[..., Feature.DISK_USED]
        self.cpu = s[..., Feature.CPU]
        self.net = s[..., Feature.NET_RX]
        self.memory = s[..., Feature.MEMORY]
        self.connections = s[..., Feature.CONNECTIONS]
        self.failing = s[..., Feature.ERROR_RATE] >= 0.5
        self.since_repair = np.rint(s[..., Feature.SINCE_REPAIR] * SINCE_REPAIR_SCALE)
        self.since_deploy = np.rint(s[..., Feature.SINCE_DEPLOY] * SINCE_REPAIR_SCALE)
        # A deploy starts the service anew as a restart does: ticks since either, whoever made it.
        self.since_start = np.minimum(self.since_repair, self.since_deploy)


class NoopPolicy:
    """Never acts: the floor."""

    name = "noop"
    privileged = False

    def __init__(self, role: Role = Role.ORDER) -> None:
        self.role = role

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Nothing to forget."""

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """Noop everywhere."""
        return np.zeros(mask.shape[0], np.int64)


class _RandomActor:
    """Each tick, with probability ``rate``, a uniformly random valid non-noop action."""

    privileged = False
    role: Role

    def __init__(self, rate: float, seed: int | None = None) -> None:
        self.rate = rate
        self.reset(1, seed)

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Restart the random stream from ``seed``."""
        self._rng = np.random.default_rng(seed)
        self._drawn: list[float] = []
        """Draws made ahead for the single-env case, next last: a Generator call costs as much as a
        tick of the rest of the env. The same stream as one call a tick (a block of n draws is
        the next n single draws)."""

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """Mostly noops; sometimes a random valid action."""
        if mask.shape[0] == 1:  # the common single-env case: mostly a noop, without array calls
            if not self._drawn:
                self._drawn = self._rng.random(_DRAWN_AHEAD).tolist()[::-1]
            draw = self._drawn.pop()
            if draw >= self.rate:
                return _NOOP_ONE
            return random_valid(np.array([draw]), self.rate, np.ascontiguousarray(mask))
        draws = self._rng.random(len(mask))
        return random_valid(draws, self.rate, np.ascontiguousarray(mask))


_DRAWN_AHEAD = 256
"""Draws a single-env random actor makes at once."""
_NOOP_ONE = np.zeros(1, np.int64)
_NOOP_ONE.setflags(write=False)  # handed to every caller: read-only, as the game's masks are


@njit(cache=True)
def random_valid(draws: np.ndarray, rate: float, mask: np.ndarray) -> np.ndarray:
    """Per row of ``mask``: where its uniform draw in ``draws`` is below ``rate``, an allowed action
    other than 0, uniformly chosen by where the draw falls below ``rate``; else (or with none
    allowed) 0. Compiled: random chaos is the order agent's opponent in every training tick, and
    this is a loop over a few thousand rows.

    The draws are made outside: numba's unboxing of a numpy Generator ignores a failure in its
    Python calls, and a Ctrl-C landing in one of them crashed the process with a segfault."""
    n, width = mask.shape
    actions = np.zeros(n, np.int64)
    for e in range(n):
        if draws[e] >= rate:
            continue
        allowed = 0
        for a in range(1, width):
            allowed += mask[e, a]
        if allowed == 0:
            continue
        # Below the rate, draw/rate is itself uniform on [0, 1): one draw picks both.
        k = min(int(draws[e] / rate * allowed), allowed - 1)
        for a in range(1, width):
            if mask[e, a]:
                if k == 0:
                    actions[e] = a
                    break
                k -= 1
    return actions


class RandomOrder(_RandomActor):
    """A random repair on a random service about once every ten ticks."""

    role = Role.ORDER
    name = "random"

    def __init__(self, rate: float = 0.1, seed: int | None = None) -> None:
        super().__init__(rate, seed)


class RandomChaos(_RandomActor):
    """A random fault on a random service about once every twenty ticks, within the budget."""

    role = Role.CHAOS
    name = "random"

    def __init__(self, rate: float = 0.05, seed: int | None = None) -> None:
        super().__init__(rate, seed)


class FlappingChaos(_RandomActor):
    """A flapping system: a service fails again soon after every repair, until the budget runs out.

    A service repaired between ``delay`` and ``window`` ticks ago gets a random fault again (one
    per tick); otherwise, like random chaos, a random fault about once every twenty ticks. It
    finds any repairer that waits to see whether a repair held before acting again.
    """

    role = Role.CHAOS
    name = "flapping"

    def __init__(self, rate: float = 0.05, delay: int = 2, window: int = 6, seed: int | None = None) -> None:
        super().__init__(rate, seed)
        self.delay, self.window = delay, window

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """Re-fault a recently repaired service where there is one, else act as random chaos."""
        actions = super().act(obs, mask)
        services = obs["services"]
        since = np.rint(services[..., Feature.SINCE_REPAIR] * SINCE_REPAIR_SCALE)
        recent = (services[..., Feature.PRESENT] > 0.5) & (since >= self.delay) & (since <= self.window)
        if not recent.any():
            return actions
        n = mask.shape[0]
        # Past the noop, chaos actions run slot by slot (deeplops.actions): a flat index + 1 is an action.
        candidates = recent[:, :, None] & mask[:, 1:].reshape(n, MAX_SLOTS, FAULTS_PER_SLOT)
        flat = candidates.reshape(n, -1)
        choice = (self._rng.random(flat.shape) + flat).argmax(axis=1) + 1
        return np.where(flat.any(axis=1), choice, actions).astype(np.int64)


class AutohealPolicy:
    """docker-autoheal with the restart policy it is deployed with.

    Docker marks a container unhealthy after ``retries`` consecutive failed health checks
    (one per tick here) and resets the count when it restarts. autoheal polls every
    ``interval`` ticks and restarts every container then unhealthy. Exited containers are
    restarted at once by the container's restart policy (``unless-stopped``), since autoheal
    itself only looks at running ones. It never cleans a disk or stops a flood.
    """

    name = "autoheal"
    role = Role.ORDER
    privileged = False

    def __init__(self, retries: int = 3, interval: int = 5, grace: int = 2) -> None:
        self.retries, self.interval, self.grace = retries, interval, grace
        self.reset(1)

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Clear health counters and the restart queue."""
        self._fails = np.zeros((n_envs, MAX_SLOTS), np.int64)
        self._queue = np.zeros((n_envs, MAX_SLOTS), np.bool_)
        self._tick = 0

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """Restart exited containers first, then those autoheal found unhealthy."""
        s = _Symptoms(obs)
        restarting = s.since_start < self.grace  # its own restart, or a deploy's
        self._fails = np.where(s.healthy | ~s.running | restarting, 0, self._fails + 1)
        if self._tick % self.interval == 0:
            self._queue |= s.present & s.running & (self._fails >= self.retries)
        self._tick += 1
        exited = s.present & ~s.running & ~restarting
        actions = _first_rule([(exited, Repair.RESTART), (self._queue, Repair.RESTART)], mask.shape[0])
        acted = actions > 0
        slots = order_slots(actions[acted])
        self._queue[np.flatnonzero(acted), slots] = False
        return actions


class KubernetesPolicy:
    """Kubernetes liveness restarts with kubelet's crash-loop back-off.

    The liveness probe (the dependency-aware /health) runs every ``period`` ticks; after
    ``threshold`` consecutive failures the container is restarted. Exited containers are
    restarted too (``restartPolicy: Always``). Restarts of a container are spaced by the
    back-off: the first at once, then 10 s, doubling up to 5 min; the count resets after
    10 minutes of healthy running. A restart waiting out its back-off is not re-counted.
    """

    name = "k8s"
    role = Role.ORDER
    privileged = False

    def __init__(
        self, period: int = 10, threshold: int = 3, backoff: int = 10, cap: int = 300, reset_after: int = 600
    ) -> None:
        self.period, self.threshold, self.backoff, self.cap, self.reset_after = (
            period, threshold, backoff, cap, reset_after,
        )  # fmt: skip
        self.reset(1)

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Clear probe counters, restart counts and back-off timers."""
        shape = (n_envs, MAX_SLOTS)
        self._fails = np.zeros(shape, np.int64)
        self._restarts = np.zeros(shape, np.int64)
        self._wait = np.full(shape, -1, np.int64)  # ticks left before a scheduled restart; -1: none
        self._good = np.zeros(shape, np.int64)
        self._tick = 0

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """Schedule restarts on exit or liveness failure; take the first one due."""
        s = _Symptoms(obs)
        restarting = s.since_start < 2  # a pod being (re)created is not probed
        pending = self._wait >= 0
        if self._tick % self.period == 0:
            probed = s.present & s.running & ~pending & ~restarting
            self._fails = np.where(probed, np.where(s.healthy, 0, self._fails + 1), self._fails)
        self._tick += 1
        self._good = np.where(s.healthy & s.running, self._good + 1, 0)
        self._restarts[self._good >= self.reset_after] = 0
        need = s.present & ~pending & ~restarting & (~s.running | (self._fails >= self.threshold))
        delay = np.where(
            self._restarts == 0, 0, np.minimum(self.backoff * 2 ** np.maximum(self._restarts - 1, 0), self.cap)
        )
        self._wait = np.where(need, delay, self._wait)
        due = self._wait == 0
        actions = _first_rule([(due, Repair.RESTART)], mask.shape[0])
        self._wait = np.where(self._wait > 0, self._wait - 1, self._wait)
        acted = np.flatnonzero(actions > 0)
        slots = order_slots(actions[acted])
        self._wait[acted, slots] = -1
        self._fails[acted, slots] = 0
        self._restarts[acted, slots] += 1
        return actions


class RunbookPolicy:
    """An expert's symptom rules, in priority order, one repair per tick.

    1. a service that exited: restart it; but one that died with its memory at ``oom_seen`` or
       more of its allowance (the kernel killed it for it) and was deployed in the last
       ``deploy_window`` ticks: roll it back (a restart would start the same leaking release);
    2. a disk at least 95% full: clean_disk;
    3. a receive rate at least 80% of the link (a flood): rate_limit;
    4. a service burning a full core: restart it;
    5. a service whose memory grew by ``growth`` or more of its allowance in each of its last
       ``leaking`` readings (a leak: a working set does not grow every tick, whatever its size),
       roll it back if it was deployed in the last ``deploy_window`` ticks, restart it otherwise
       (it frees the memory for a while);
    6. a client holding all the connections its pools allow (``held`` or more of them) while a
       server it uses is full (its connections at ``held`` or more of its limit): restart the
       client, whose leaked connections close with its process (a restart of the server frees
       them only until the client has leaked as many again). Not sooner, on a climb: pools that
       recycle their connections make a server's count swing by a third of its limit from one
       reading to the next, so a climb is no sign on a real one;
    7. otherwise repair only the deepest unhealthy service: one unhealthy for ``streak``
       ticks running while each of its direct dependencies has been well for ``settle``
       ticks, so a cascade is fixed at its root and dependents get time to recover. Unhealthy
       means most of its requests fail, as its users see them now; its health probe is not
       asked: monitoring may report it late or flipped, so a flaky probe alone repairs nothing
       and a late one delays nothing. The repair is a rollback when the service was deployed in the
       last ``deploy_window`` ticks, after its last repair (a restart would start the same
       release; a service the runbook rolled back itself is not rolled back again), a restart
       otherwise.
    Without ``rollback`` it is the runbook of a team that has no rollback step: the restart rules
    after each rollback rule take what it caught, so a bad deploy is restarted again and again and a
    leak relieved for a while, and every other fault is handled as well as ever (the chaos agent's
    sparring partner for the faults only a rollback ends).
    A service repaired in the last ``grace`` ticks is left alone, and so is one still coming back
    from a repair or a deploy (not seen running since; a PostgreSQL or JVM restart takes seconds):
    it is judged from when it runs again, and restarted anew only if it has not come back
    within ``patience`` ticks. Judging a restart before it finishes restarts it again, and
    again: a storm that never lets it finish.
    """

    name = "runbook"
    role = Role.ORDER
    privileged = False

    def __init__(
        self,
        streak: int = 2,
        settle: int = 3,
        grace: int = 3,
        patience: int = 20,
        deploy_window: int = 30,
        growth: float = 0.05,
        leaking: int = 3,
        oom_seen: float = 0.5,
        held: float = 0.95,
        rollback: bool = True,
    ) -> None:
        self.name = "runbook" if rollback else "runbook-without-rollback"
        self.rollback = rollback
        self.streak, self.settle, self.grace, self.patience = streak, settle, grace, patience
        self.deploy_window, self.growth, self.leaking, self.oom_seen = deploy_window, growth, leaking, oom_seen
        self.held = held
        self.reset(1)

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Clear health streaks and what it waits for."""
        self._bad = np.zeros((n_envs, MAX_SLOTS), np.int64)
        self._good = np.zeros((n_envs, MAX_SLOTS), np.int64)
        self._since = np.full((n_envs, MAX_SLOTS), np.inf)
        self._back = np.ones((n_envs, MAX_SLOTS), np.bool_)
        self._memory = np.zeros((n_envs, MAX_SLOTS), np.float32)
        self._growing = np.zeros((n_envs, MAX_SLOTS), np.int64)

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """The first rule that fires, on the deepest service it fires for."""
        s = _Symptoms(obs)
        # A repair since the last tick stops the service's ticks-since-repair from growing: from
        # then on it is awaited until it is seen running (or for ``patience`` ticks, should it never
        # come back). Few array operations: the runbook is the chaos env's opponent every tick.
        # A deploy restarts the service as a repair does (someone else's): it is awaited the same way.
        since = s.since_start
        self._back = (self._back & (since > self._since)) | s.running
        self._since = since
        free = self._back | (since >= self.patience)  # not awaited
        # Bad: its users see errors, this tick. Its health report is not asked: it can lie
        # (flaky) or come late (lagging monitoring), and errors read as the requests fail.
        self._bad = np.where(s.failing, self._bad + 1, 0) * free
        self._good = np.where(s.failing, 0, self._good + 1)
        up = s.present & s.running
        settled = up & (s.since_repair >= self.grace) & free  # a deploy is awaited, not given grace
        unsettled = (self._good < self.settle).astype(np.int8)
        deps_settled = np.matmul(obs["adjacency"], unsettled[..., None])[..., 0] == 0
        broken = settled & (self._bad >= self.streak) & deps_settled
        # Deployed by someone else since its last repair (a rollback of its own resets both).
        deployed = (s.since_deploy <= self.deploy_window) & (s.since_deploy < s.since_repair)
        # Readings in a row its memory grew by ``growth``, and its memory when last seen running
        # (what it died with, once it exited). A leak is the release's, however often it was
        # restarted since: a recent deploy will do.
        grew = s.running & (s.memory - self._memory >= self.growth)
        self._growing = np.where(grew, self._growing + 1, 0)
        self._memory = np.where(s.running, s.memory, self._memory)
        leaking = up & (self._growing >= self.leaking)
        at_limit = s.connections >= self.held  # a server full, or a client at its pools' size and more
        full = (up & at_limit).astype(np.int8)
        uses_full = np.matmul(obs["adjacency"], full[..., None])[..., 0] > 0
        holding = settled & at_limit & uses_full
        exited = s.present & ~s.running & (since >= 2) & free
        recent = s.since_deploy <= self.deploy_window
        rules = [
            (exited & (self._memory >= self.oom_seen) & recent, Repair.ROLLBACK),
            (exited, Repair.RESTART),
            (s.present & (s.disk >= 0.95), Repair.CLEAN_DISK),
            (s.present & (s.net >= 0.8), Repair.RATE_LIMIT),
            (settled & (s.cpu >= 0.9), Repair.RESTART),
            (leaking & recent, Repair.ROLLBACK),
            (leaking, Repair.RESTART),
            (holding, Repair.RESTART),
            (broken & deployed, Repair.ROLLBACK),
            (broken, Repair.RESTART),
        ]
        if not self.rollback:
            rules = [rule for rule in rules if rule[1] is not Repair.ROLLBACK]
        return _first_rule(rules, mask.shape[0])


class OraclePolicy:
    """Sees the injected faults and applies the proper repair at once: the upper bound."""

    name = "oracle"
    role = Role.ORDER
    privileged = True

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Nothing to forget."""

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """For the deepest faulted service, the repair that ends its fault soonest without
        destroying data (cheapest first among equals), where the backend tells each repair's
        downtime; the proper repair where it does not."""
        faults = obs["faults"]
        faulted = faults > 0
        rows = np.arange(faults.shape[0])
        slot = faulted.argmax(axis=1)
        fault = faults[rows, slot]
        repair = PROPER_REPAIR_TABLE[fault]
        if "downtime" in obs:
            ends = CLEARS_TABLE[:, fault].T  # (n_envs, len(Repair))
            has_disk = obs["services"][rows, slot, Feature.HAS_DISK] > 0.5
            ends[:, Repair.RECREATE] &= ~has_disk  # a recreate would destroy its data
            score = np.where(ends, obs["downtime"][rows, slot] + REPAIR_COST_TABLE, np.inf)
            repair = np.where(ends.any(axis=1), score.argmin(axis=1), repair)
        return np.where(faulted.any(axis=1), order_actions(slot, repair), 0).astype(np.int64)
