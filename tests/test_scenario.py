"""Scenario files: validation names every problem, and the script injects on schedule."""

from __future__ import annotations

import numpy as np
import pytest

from deeplops.actions import N_CHAOS_ACTIONS, Role, chaos_action
from deeplops.drill import run_drill
from deeplops.errors import ScenarioError
from deeplops.faults import Fault
from deeplops.policies import load_policy
from deeplops.scenario import ScriptedChaos, load_scenario, shipped_scenarios


def write(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_the_library_covers_every_fault_on_several_topologies():
    scenarios = [load_scenario(p) for p in shipped_scenarios()]
    assert len(scenarios) >= 10
    assert all(s.description and s.faults and s.expect for s in scenarios)
    assert {f.fault for s in scenarios for f in s.faults} == set(Fault)
    assert len({s.topology.name for s in scenarios}) >= 2


@pytest.mark.parametrize("path", shipped_scenarios(), ids=lambda p: p.stem)
def test_every_shipped_scenario_holds_for_the_runbook_on_the_sim(path):
    run = run_drill(load_scenario(path), "runbook", load_policy("runbook", Role.ORDER))
    assert run.checks and run.passed, run.checks
    assert run.metrics.faults_injected == len(load_scenario(path).faults)


def test_a_hypothesis_fails_clause_by_clause(tmp_path):
    text = (
        "name: s\nenv: shop\nticks: 20\nexpect: {availability: 0.5, slo_at_end: true, healthy_at_end: [db, cache]}\n"
        "faults:\n  - {at: 2, fault: kill, target: db}\n"
    )
    run = run_drill(load_scenario(write(tmp_path, text)), "noop", load_policy("noop", Role.ORDER))
    assert dict(run.checks) == {
        "availability >= 0.5": False,  # db stays down from tick 2 on
        "SLO ok at the end": False,
        "db healthy at the end": False,
        "cache healthy at the end": True,
    }
    assert not run.passed


def test_healthy_at_end_must_name_services(tmp_path):
    with pytest.raises(ScenarioError, match="ghost"):
        load_scenario(write(tmp_path, "name: s\nticks: 10\nfaults: []\nexpect: {healthy_at_end: [ghost]}\n"))


def test_env_may_be_a_path_relative_to_the_scenario(tmp_path):
    (tmp_path / "mini.yaml").write_text("name: mini\nservices:\n  web: {entry: true}\n")
    scenario = load_scenario(
        write(tmp_path, "name: s\nenv: mini.yaml\nticks: 5\nfaults: [{at: 1, fault: kill, target: web}]\n")
    )
    assert scenario.topology.names == ("web",)


def test_all_problems_are_reported_together(tmp_path):
    text = (
        "name: s\nenv: shop\nticks: 10\nfaults:\n"
        "  - {at: 1, fault: meteor, target: db}\n  - {at: 2, fault: kill, target: ghost}\n"
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text))
    assert "meteor" in str(err.value) and "ghost" in str(err.value)


def test_fault_after_the_end_is_rejected(tmp_path):
    with pytest.raises(ScenarioError, match=r"\[0, 10\)"):
        load_scenario(write(tmp_path, "name: s\nticks: 10\nfaults: [{at: 10, fault: kill, target: db}]\n"))


def test_two_faults_on_one_service_in_one_tick_are_rejected_naming_both(tmp_path):
    text = (
        "name: s\nticks: 10\nfaults:\n  - {at: 3, fault: kill, target: db}\n  - {at: 3, fault: pause, target: api}\n"
        "  - {at: 3, fault: pause, target: db}\n"
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(write(tmp_path, text))
    message = str(err.value)
    assert "faults[0] (kill)" in message and "faults[2] (pause)" in message
    assert "'db'" in message and "tick 3" in message and "api" not in message
    assert "\n" not in message


def test_the_same_service_may_be_hit_again_at_another_tick(tmp_path):
    text = "name: s\nticks: 10\nfaults:\n  - {at: 3, fault: kill, target: db}\n  - {at: 4, fault: pause, target: db}\n"
    assert len(load_scenario(write(tmp_path, text)).faults) == 2


TWO_AT_TICK_3 = (
    "name: s\nticks: 12\nseed: 1\nfaults:\n  - {at: 3, fault: kill, target: db}\n"
    "  - {at: 3, fault: pause, target: cache}\n  - {at: 7, fault: kill, target: queue}\n"
)


def test_faults_on_several_services_at_one_tick_are_injected_together(tmp_path):
    run = run_drill(load_scenario(write(tmp_path, TWO_AT_TICK_3)), "noop", load_policy("noop", Role.ORDER))
    rows = run.trace.rows
    assert rows[3]["faults"] == [{"fault": "kill", "target": "db"}, {"fault": "pause", "target": "cache"}]
    assert not rows[3]["health"]["db"] and not rows[3]["health"]["cache"]
    assert rows[2]["health"]["db"] and rows[2]["health"]["cache"]
    assert [r["tick"] for r in rows if r["faults"]] == [3, 7]
    assert run.metrics.faults_injected == 3 and run.skipped_faults == 0


def test_disk_full_on_a_service_without_a_volume_is_rejected(tmp_path):
    with pytest.raises(ScenarioError, match="cache"):
        load_scenario(write(tmp_path, "name: s\nticks: 10\nfaults: [{at: 1, fault: disk_full, target: cache}]\n"))


def test_expected_availability_must_be_a_fraction(tmp_path):
    with pytest.raises(ScenarioError, match="availability"):
        load_scenario(write(tmp_path, "name: s\nticks: 10\nfaults: []\nexpect: {availability: 90}\n"))


def test_unknown_top_level_key_is_rejected(tmp_path):
    with pytest.raises(ScenarioError, match="duration"):
        load_scenario(write(tmp_path, "name: s\nticks: 10\nduration: 5\nfaults: []\n"))


def test_scripted_chaos_injects_each_fault_at_its_tick(tmp_path):
    text = (
        "name: s\nticks: 10\nfaults:\n"
        "  - {at: 2, fault: kill, target: db}\n  - {at: 5, fault: disk_full, target: queue}\n"
    )
    scenario = load_scenario(write(tmp_path, text))
    script = ScriptedChaos(scenario)
    script.reset(1)
    mask = np.ones((1, 81), bool)
    actions = [int(script.act({}, mask)[0]) for _ in range(8)]
    index = scenario.topology.index
    expected = [0] * 8
    expected[2] = chaos_action(index["db"], Fault.KILL)
    expected[5] = chaos_action(index["queue"], Fault.DISK_FULL)
    assert actions == expected


def test_scripted_chaos_gives_the_other_faults_of_a_tick_as_extra_actions(tmp_path):
    scenario = load_scenario(write(tmp_path, TWO_AT_TICK_3))
    script = ScriptedChaos(scenario)
    script.reset(2)
    mask = np.ones((2, N_CHAOS_ACTIONS), bool)
    index = scenario.topology.index
    extras = []
    for _ in range(8):
        actions = script.act({}, mask)
        extras.append(script.extra_actions())
        if len(extras) == 4:
            assert (actions == chaos_action(index["db"], Fault.KILL)).all()
    assert [e is None for e in extras] == [True, True, True, False, True, True, True, True]
    np.testing.assert_array_equal(extras[3], [[chaos_action(index["cache"], Fault.PAUSE)]] * 2)
