"""Sim-vs-real agreement: the tolerances, and (with Docker) a drill that must agree."""

from __future__ import annotations

import json

import pytest

from deeplops.agreement import AVAILABILITY_TOLERANCE, MTTR_TOLERANCE, Agreement, compare
from deeplops.catalog import data_dir
from deeplops.scenario import load_scenario
from deeplops.sim import SimParams


def agreement(avail=(0.9, 0.9), mttr=(2.0, 2.0), unrecovered=(0, 0)) -> Agreement:
    return Agreement("s", avail, mttr, unrecovered)


def test_figures_within_every_tolerance_agree():
    assert agreement(avail=(0.90, 0.90 + 0.9 * AVAILABILITY_TOLERANCE), mttr=(2.0, 2.0 + 0.9 * MTTR_TOLERANCE)).agrees


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
def test_the_simulator_agrees_with_docker_on_a_cascade_drill(docker_engine, tmp_path):
    path = tmp_path / "drill.yaml"
    path.write_text(
        "name: drill\nenv: shop\nticks: 40\nseed: 1\nfaults:\n"
        "  - {at: 3, fault: kill, target: db}\n"
        "  - {at: 14, fault: disk_full, target: queue}\n"
        "  - {at: 26, fault: net_saturation, target: api}\n"
    )
    [result] = compare([load_scenario(path)], order="runbook")
    assert result.availability_gap <= AVAILABILITY_TOLERANCE, result
    assert result.mttr_gap is not None and result.mttr_gap <= MTTR_TOLERANCE, result
    assert result.unrecovered[0] == result.unrecovered[1], result
