"""Sim-vs-real agreement: the tolerances, and (with Docker) every shipped scenario, which must hold
for the runbook on real containers and agree with the simulator."""

from __future__ import annotations

import json

import pytest

from deeplops.agreement import AVAILABILITY_TOLERANCE, MTTR_TOLERANCE, Agreement, compare
from deeplops.catalog import data_dir
from deeplops.scenario import load_scenario, shipped_scenarios
from deeplops.sim import SimParams

# Real seconds against calibrated expectations, floods included: these files share one xdist
# group, so one worker runs them one after another and no other of them shares the host.
pytestmark = pytest.mark.xdist_group("timed")


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


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("path", shipped_scenarios(), ids=lambda p: p.stem)
def test_every_shipped_scenario_holds_on_docker_and_agrees_with_the_simulator(docker_engine, path):
    [result] = compare([load_scenario(path)], order="runbook")
    assert result.hypothesis == (True, True), result
    assert result.agrees, result
