"""The documented bounds of every size a user can give, and the checks that hold values to them.

A value outside its bound is refused before any work starts, with one line naming the field,
the bound and what was given: a tick count of 1e9 would otherwise run for days, a seed of 2**64
would overflow the simulator's int64 streams, and NaN passes every ``<`` comparison.
"""

from __future__ import annotations

import math
import re

from deeplops.errors import ConfigError, DeeplopsError

MAX_TICKS = 86_400
"""Longest episode, drill or experiment in ticks: a day of real seconds on the Docker backend."""
MAX_SEED = 2**32 - 1
"""Largest seed; an episode's seed (``seed + episode``) must stay within it too."""
MAX_EPISODES = 100_000
"""Most episodes one command plays."""
MAX_SUITE_EPISODES = 10_000
"""Most episodes per suite of ``deeplops benchmark`` (every policy plays every suite that many)."""
MAX_GENERATIONS = 1_000
"""Most self-play generations."""
MAX_STEPS = 1_000_000_000
"""Most reinforcement-learning transitions per role per generation."""
MAX_DISK_MB = 1_024
"""Largest data volume of one service, in MiB (a tmpfs: it lives in the host's memory)."""
MAX_RESTART_S = 60.0
"""Longest a service's restart may take (its topology's ``restart_s``), in seconds: a minute."""
MAX_SECONDS = 86_400.0
"""Longest interval, timeout, cooldown or measuring time, in seconds (a day)."""
MAX_PORT = 65_535
"""Largest TCP port."""


def whole(value: object, what: str, low: int, high: int, error: type[DeeplopsError] = ConfigError) -> int:
    """``value`` as an int in ``[low, high]``, or ``error`` naming ``what``, the bound and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{what} must be a whole number in [{low}, {high}], got {shown(value)}")
    return value


def number(
    value: object, what: str, low: float, high: float, error: type[DeeplopsError] = ConfigError, open_low: bool = False
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``open_low``), or ``error``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if open_low else low <= value) and value <= high  # type: ignore[operator]
    if not ok:
        bracket = "(" if open_low else "["
        raise error(f"{what} must be a number in {bracket}{low:g}, {high:g}], got {shown(value)}")
    return float(value)  # type: ignore[arg-type]


def shown(value: object, width: int = 40) -> str:
    """A short rendering of a user's value: its type only when it is not a plain scalar; a string
    past ``width`` characters cut there."""
    if value is None:
        return "nothing"
    if isinstance(value, bool | int | float):
        text = repr(value)
        return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"
    if isinstance(value, str):
        return repr(value) if len(value) <= width else f"{value[: width - 3]!r}..."
    return f"a {type(value).__name__}"


def shown_keys(keys: set[object] | list[object]) -> str:
    """Keys a user gave that are not known, as a short list: at most three, and only those that look
    like field names (a foreign file's keys may be its content, e.g. a line of /etc/shadow)."""
    names = sorted(repr(k) for k in keys if isinstance(k, str) and _FIELD.match(k))
    others = len(keys) - len(names)
    parts = names[:3]
    if len(names) > 3:
        parts.append(f"{len(names) - 3} more")
    if others:
        parts.append(f"{others} not shown")
    return ", ".join(parts)


_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
