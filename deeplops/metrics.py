"""Episode metrics (availability, MTTR, repairs) and their summary across episodes (docs/design.md §4.3, §9)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class EpisodeStats:
    """What one episode measured."""

    ticks: int
    """Ticks played."""
    slo_ticks: int
    """Ticks in which the SLO held."""
    faults_injected: int
    """Faults the chaos agent started."""
    faults_recovered: int
    """Faults whose target and the SLO were healthy again before the episode ended."""
    unrecovered: int
    """Faults still open (active, or ended but not yet recovered) at the end."""
    relapses: int
    """Times a fault's symptoms came back after a repair had ended them with its cause still there."""
    mttrs: tuple[int, ...]
    """Ticks from injection to recovery, one per recovered fault."""
    repairs: int
    """Repairs taken (no-ops excluded)."""
    wasted_repairs: int
    """Repairs that ended no fault: wrong service or wrong repair."""
    data_loss: int
    """Recreates of a service with a data volume: its data was lost."""
    invalid_actions: int
    """Masked actions taken by either agent, played as no-ops."""

    @property
    def availability(self) -> float:
        """Fraction of ticks in which the SLO held."""
        return self.slo_ticks / self.ticks if self.ticks else 1.0


@dataclass(frozen=True)
class Summary:
    """The contract metrics over a set of episodes (docs/design.md §9); ``to_json()`` is the ``--json`` object."""

    availability: float
    """Fraction of all ticks in which the SLO held (1.0 when no tick was played)."""
    mttr_mean: float | None
    """Mean ticks from injection to recovery over recovered faults; None when none recovered."""
    mttr_p95: float | None
    """95th percentile of the same (linear interpolation); None when none recovered."""
    faults_injected: int
    """Faults the chaos agent started."""
    faults_recovered: int
    """Faults whose target and the SLO were healthy again before their episode ended."""
    unrecovered: int
    """Faults still open at the end of their episode."""
    relapses: int
    """Times a fault's symptoms came back after a repair had ended them with its cause still there
    (docs/design.md §4.2, durability)."""
    repairs: int
    """Repairs taken (no-ops excluded)."""
    wasted_repairs: int
    """Repairs that ended no fault: wrong service or wrong repair."""
    data_loss: int
    """Recreates of a service with a data volume: its data was lost."""
    invalid_actions: int
    """Masked actions taken by either agent, played as no-ops."""
    episodes: int
    """Episodes summarized."""
    ticks: int
    """Ticks played over all of them."""

    def to_json(self) -> dict[str, float | int | None]:
        """The metrics as the object ``--json`` writes: every field, in this order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def summarize(episodes: Sequence[EpisodeStats]) -> Summary:
    """The contract metrics over ``episodes``.

    ``mttr_mean`` and ``mttr_p95`` are over recovered faults and are ``None`` when none recovered.
    """
    mttrs = np.array([m for ep in episodes for m in ep.mttrs], dtype=np.float64)
    ticks = sum(ep.ticks for ep in episodes)
    return Summary(
        availability=sum(ep.slo_ticks for ep in episodes) / ticks if ticks else 1.0,
        mttr_mean=float(mttrs.mean()) if mttrs.size else None,
        mttr_p95=float(np.percentile(mttrs, 95)) if mttrs.size else None,
        faults_injected=sum(ep.faults_injected for ep in episodes),
        faults_recovered=sum(ep.faults_recovered for ep in episodes),
        unrecovered=sum(ep.unrecovered for ep in episodes),
        relapses=sum(ep.relapses for ep in episodes),
        repairs=sum(ep.repairs for ep in episodes),
        wasted_repairs=sum(ep.wasted_repairs for ep in episodes),
        data_loss=sum(ep.data_loss for ep in episodes),
        invalid_actions=sum(ep.invalid_actions for ep in episodes),
        episodes=len(episodes),
        ticks=ticks,
    )
