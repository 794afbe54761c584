"""Sim-vs-real agreement: the tolerances, and (with Docker) every shipped scenario, which must hold
for the runbook on real containers and agree with the simulator."""

from __future__ import annotations

import json

import pytest

from deeplops.agreement import AVAILABILITY_TOLERANCE, MTTR_TOLERANCE, Agreement, compare
from deeplops.catalog import data_dir
from deeplops.scenario import load_scenario, shipped_scenarios
from deeplops.sim import SimParams


def agreement(avail=(0.9, 0.9), mttr=(2.0, 2.0), unrecovered=(0, 0)) -> Agreement:
    return Agreement("s", avail, mttr, unrecovered)


def test_figures_within_every_tolerance_agree():
    assert agreement(avail=(0.90, 0.90 + 0.9 * AVAILABILITY_TOLERANCE), mttr=(2.0, 2.0 + 0.9 * MTTR_TOLERANCE)).agrees


def test_a_gap_of_exactly_the_tolerance_agrees_despite_floating_point():
    # Two ticks of 40: 36/40 on one backend, 34/40 on the other.
    assert agreement(avail=(36 / 40, 34 / 40)).agrees


def test_an_availability_gap_beyond_the_tolerance_disagrees():
    assert not agreement(avail=(0.90, 0.96)).agrees


def test_an_mttr_gap_beyond_the_tolerance_disagrees():
    assert not agreement(mttr=(2.0, 4.5)).agrees


def test_a_different_count_of_unrecovered_faults_disagrees():
    assert not agreement(unrecovered=(0, 1)).agrees


def test_the_sim_defaults_are_the_shipped_calibration():
    shipped = json.loads((data_dir("sandbox") / "calibration.json").read_text())
    assert SimParams.from_calibration(shipped["sim_params"]) == SimParams()


SPEED_GAPS = {
    "store-worker-connection-leak": "the worker's leak fills PostgreSQL later and less steadily on Docker: "
    "the database's count swings as the pools recycle their connections (full at the 6th to 10th "
    "reading in three runs), and the "
    "restart of the worker, made once the database reads full, comes 2 to 5 ticks later than in the "
    "simulator: 0.900 against 0.975, MTTR 11.0 and 12.0 against 7.0 in two runs (0.950 and 9.0 in a "
    "third)",
    "gateway-flood": "as the flood drains every container's CPU reads a burst (the api's 0.93) in some runs, "
    "and the runbook's CPU rule restarts the api: 0.800 against 0.867 in one run of three",
}
"""Drills where the runbook's play on Docker varied from run to run on the calibration's machine by
more than the tolerance (sandbox/README.md, agreement): expected failures, not required ones, run
only with ``--known-gaps`` (tests/conftest.py)."""


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=[pytest.mark.known_gap, pytest.mark.xfail(reason=SPEED_GAPS[p.stem])])
     if p.stem in SPEED_GAPS else p for p in shipped_scenarios()],
    ids=lambda p: p.stem,
)  # fmt: skip
def test_every_shipped_scenario_holds_on_docker_and_agrees_with_the_simulator(docker_engine, path):
    # As for the agent (below): a real restart or deploy that ends a tick later than the simulator's
    # moves the play by a tick or two (store-bad-gateway-then-app-release in one CI run: 0.800
    # against 0.867, MTTR 3.0 against 2.0, where the run before and a replay after agreed exactly).
    # A second play is made only when the first fails; a real gap fails both.
    scenario = load_scenario(path)
    [first] = compare([scenario], order="runbook")
    if first.hypothesis != (True, True) or not first.agrees:
        [second] = compare([scenario], order="runbook")
        assert second.hypothesis == (True, True), (first, second)
        assert second.agrees, (first, second)


REAL_SOFTWARE = [p for p in shipped_scenarios() if set(load_scenario(p).topology.kinds) != {"service"}]
"""The drills on topologies of real software (PostgreSQL, Redis, nginx, the app and the worker)."""
SHIPPED_AGENT = str(data_dir("agents") / "pretrained" / "order.zip")


def test_at_least_four_shipped_drills_run_on_real_software():
    names = {load_scenario(p).topology.name for p in REAL_SOFTWARE}
    assert len(REAL_SOFTWARE) >= 4 and "store" in names, names


KNOWN_GAPS = {
    "store-worker-connection-leak": "the worker's leak fills PostgreSQL later and less steadily on Docker: "
    "the database's count swings as the pools recycle their connections (full at the 6th to 10th "
    "reading in three runs), and the "
    "agent's restart of the worker, made once the database reads full, comes 2 to 5 ticks later than in "
    "the simulator: 0.900 against 0.975, MTTR 11.0 against 7.0 in one run",
    "store-wal-disk-full": "on Docker the worker's writes into their own table fail about 12 ticks into the "
    "database's full disk, long before the app's orders, and the agent's cleaning of the database comes at "
    "another time than the simulator's (MTTR 10.5 and 17.0 against 14.5): the simulator keeps one page per store",
    "store-redis-queue-stall": "whether the agent restarts the worker starved by a CPU hog turns on a few "
    "ticks of failed health checks, drawn in the simulator (3 ticks in 8) and real on Docker: MTTR 3.5 "
    "against 2.0 in one run of two that agreed",
}
"""Drills where the shipped agent's play on the two backends differed on the calibration's machine,
and why where known (sandbox/README.md, agreement); expected failures, not required ones, run only
with ``--known-gaps``."""


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=[pytest.mark.known_gap, pytest.mark.xfail(reason=KNOWN_GAPS[p.stem])])
     if p.stem in KNOWN_GAPS else p for p in REAL_SOFTWARE],
    ids=lambda p: p.stem,
)  # fmt: skip
def test_the_shipped_agent_agrees_with_the_simulator_on_real_software(docker_engine, path):
    # The agent acts on what it sees, so a tick's difference in when a real restart ends (PostgreSQL's
    # rollback serves within the tick in most runs, in the next in some) can change its next move as
    # well as the tick: one play of the drill on Docker may differ by more than the tolerance where the
    # next one agrees (sandbox/README.md, agreement). A second play is made only when the first
    # disagrees; a real gap disagrees in both.
    [first] = compare([load_scenario(path)], order=SHIPPED_AGENT)
    if not first.agrees:
        [second] = compare([load_scenario(path)], order=SHIPPED_AGENT)
        assert second.agrees, (first, second)
