"""Does the simulator behave like the real thing? The same scenarios, the same policy, on two
backends, compared figure by figure against fixed tolerances."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deeplops.actions import Role
from deeplops.drill import run_drill
from deeplops.policies import load_policy
from deeplops.scenario import Scenario

AVAILABILITY_TOLERANCE = 0.05
"""Largest |availability difference| for two backends to agree on a scenario."""
MTTR_TOLERANCE = 2.0
"""Largest |mean MTTR difference|, in ticks."""


@dataclass(frozen=True)
class Agreement:
    """One scenario's figures on both backends."""

    scenario: str
    """The scenario's name."""
    availability: tuple[float, float]
    """Availability on each backend."""
    mttr_mean: tuple[float | None, float | None]
    """Mean MTTR in ticks on each backend; None where nothing recovered."""
    unrecovered: tuple[int, int]
    """Faults left unrecovered on each backend."""
    hypothesis: tuple[bool, bool] = (True, True)
    """Whether the scenario's steady-state hypothesis held on each backend."""

    @property
    def availability_gap(self) -> float:
        """|availability difference|."""
        return abs(self.availability[0] - self.availability[1])

    @property
    def mttr_gap(self) -> float | None:
        """|mean MTTR difference| in ticks; None when either side recovered nothing."""
        a, b = self.mttr_mean
        return None if a is None or b is None else abs(a - b)

    @property
    def agrees(self) -> bool:
        """Within both tolerances, with the same number of unrecovered faults."""
        mttr_ok = self.mttr_gap is not None and self.mttr_gap <= MTTR_TOLERANCE
        both_none = self.mttr_mean == (None, None)
        return (
            self.availability_gap <= AVAILABILITY_TOLERANCE + 1e-9  # 0.9 - 0.85 is 0.05000000000000004
            and (mttr_ok or both_none)
            and self.unrecovered[0] == self.unrecovered[1]
        )


def compare(
    scenarios: Sequence[Scenario],
    order: str = "runbook",
    backends: tuple[str, str] = ("sim", "docker"),
    on_scenario: Callable[[str, str], None] | None = None,
) -> list[Agreement]:
    """Replay each scenario with the ``order`` policy on both backends and pair the figures."""
    out = []
    for scenario in scenarios:
        figures = []
        for backend in backends:
            if on_scenario is not None:
                on_scenario(scenario.name, backend)
            figures.append(run_drill(scenario, order, load_policy(order, Role.ORDER), backend))
        a, b = (run.metrics for run in figures)
        out.append(
            Agreement(
                scenario=scenario.name,
                availability=(a.availability, b.availability),
                mttr_mean=(a.mttr_mean, b.mttr_mean),
                unrecovered=(a.unrecovered, b.unrecovered),
                hypothesis=(figures[0].passed, figures[1].passed),
            )
        )
    return out
