"""Guard rails between a policy's choice and a real repair: an allowlist, a rate limit, a
per-service cooldown with exponential back-off, and a circuit breaker that stops acting when
repairs stop restoring health. Pure bookkeeping over timestamps, so it is tested without Docker.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from deeplops import bounds
from deeplops.errors import ConfigError
from deeplops.faults import REPAIRS, Repair

SAFE_REPAIRS = tuple(r for r in REPAIRS if r is not Repair.RECREATE)
"""Allowed unless told otherwise: recreate loses the service's data, so it must be asked for."""
MAX_PER_MINUTE = 600
"""Most ``--max-actions-per-minute``: one repair per decision at the shortest interval."""
MAX_BREAKER = 1_000
"""Most ``--breaker`` failures in a row: a breaker that never opens is no breaker."""


@dataclass(frozen=True)
class GuardConfig:
    """The guard rails' settings."""

    allow: tuple[Repair, ...] = SAFE_REPAIRS
    """Repairs the sidecar may apply."""
    max_per_minute: int = 6
    """Repairs applied in any 60 s, across the whole stack."""
    cooldown_s: float = 10.0
    """After a repair, the same service is left alone this long; doubled for every repair of it
    that did not restore its health, up to ``max_cooldown_s``."""
    max_cooldown_s: float = 300.0
    """Longest per-service cooldown."""
    breaker_failures: int = 3
    """Consecutive repairs that did not restore health after which the breaker opens: the sidecar
    stops acting (and alerts) until ``breaker_reset_s`` has passed."""
    breaker_reset_s: float = 300.0
    """How long an open breaker stays open."""

    def __post_init__(self) -> None:
        if not all(isinstance(r, Repair) and r is not Repair.NOOP for r in self.allow):
            raise ConfigError(
                f"--allow lists repairs (restart, clean_disk, rate_limit, recreate, rollback), got {self.allow!r:.80}"
            )
        bounds.whole(self.max_per_minute, "--max-actions-per-minute", 1, MAX_PER_MINUTE)
        bounds.whole(self.breaker_failures, "--breaker", 1, MAX_BREAKER)
        bounds.number(self.cooldown_s, "--cooldown (seconds)", 0.0, bounds.MAX_SECONDS)
        bounds.number(self.max_cooldown_s, "the longest cooldown (seconds)", self.cooldown_s, bounds.MAX_SECONDS)
        bounds.number(
            self.breaker_reset_s, "the breaker's reset time (seconds)", 0.0, bounds.MAX_SECONDS, open_low=True
        )


@dataclass
class Guards:
    """The guard rails' state: what was applied when, and how it went."""

    config: GuardConfig = field(default_factory=GuardConfig)
    _recent: deque[float] = field(default_factory=deque)
    _until: dict[str, float] = field(default_factory=dict)
    _strikes: dict[str, int] = field(default_factory=dict)
    _failures: int = 0
    _open_until: float | None = None

    def verdict(self, service: str, repair: Repair, now: float) -> str | None:
        """None when the repair may go ahead; otherwise why it is suppressed (a metric label)."""
        if repair not in self.config.allow:
            return "not_allowed"
        if self.breaker_open(now):
            return "circuit_open"
        while self._recent and self._recent[0] <= now - 60.0:
            self._recent.popleft()
        if len(self._recent) >= self.config.max_per_minute:
            return "rate_limited"
        if now < self._until.get(service, float("-inf")):
            return "cooldown"
        return None

    def applied(self, service: str, now: float) -> None:
        """A repair of ``service`` was applied at ``now``."""
        self._recent.append(now)
        backoff = self.config.cooldown_s * 2 ** self._strikes.get(service, 0)
        self._until[service] = now + min(backoff, self.config.max_cooldown_s)

    def outcome(self, service: str, healed: bool, now: float) -> bool:
        """Record whether a repair of ``service`` restored its health; True when this opens the breaker."""
        if healed:
            self._strikes[service] = 0
            self._failures = 0
            return False
        self._strikes[service] = self._strikes.get(service, 0) + 1
        self._failures += 1
        if self._failures >= self.config.breaker_failures and not self.breaker_open(now):
            self._open_until = now + self.config.breaker_reset_s
            return True
        return False

    def breaker_open(self, now: float) -> bool:
        """Whether the circuit breaker is holding the sidecar back."""
        if self._open_until is not None and now >= self._open_until:
            # Half-open: act again, but one more failed repair re-opens it.
            self._open_until, self._failures = None, self.config.breaker_failures - 1
        return self._open_until is not None
