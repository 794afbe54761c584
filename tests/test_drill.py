"""Drills from traces and Chaos Toolkit experiments: recorded episodes replay exactly, experiments
map to fault timelines and back, and bad files are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deeplops.actions import Role
from deeplops.chaostoolkit.experiment import read_experiment, to_experiment
from deeplops.drill import load_drill, run_drill
from deeplops.errors import ScenarioError
from deeplops.evaluate import Match, play
from deeplops.faults import Fault
from deeplops.policies import load_policy
from deeplops.scenario import ScheduledFault, load_scenario, shipped_scenarios
from deeplops.topology import load_topology

SHOP = load_topology("shop")


def record(
    tmp_path: Path, order: str = "runbook", chaos: str = "random", seed: int = 3, episodes: int = 2
) -> list[Path]:
    """Play and write traces as ``evaluate --record`` does; their paths."""
    traces: list = []
    play(Match(SHOP, load_policy(order, Role.ORDER), load_policy(chaos, Role.CHAOS)), episodes, seed=seed,
         traces=traces)  # fmt: skip
    paths = []
    for i, trace in enumerate(traces):
        trace.write(tmp_path / f"episode-{i}.jsonl")
        paths.append(tmp_path / f"episode-{i}.jsonl")
    return paths


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


@pytest.mark.parametrize("order", ["runbook", "k8s", "autoheal"])
def test_a_trace_replayed_with_its_policy_is_identical_tick_for_tick(tmp_path, order):
    # Episode 1 of a batch: its replay runs alone, so this also checks batch position does not matter.
    path = record(tmp_path, order=order)[1]
    drill = load_drill(path)
    assert drill.faults, "the recorded episode should have faults to replay"
    replayed = run_drill(drill, order, load_policy(order, Role.ORDER)).trace.rows
    assert replayed == rows(path)


def test_a_trace_replayed_with_another_policy_keeps_the_fault_timeline(tmp_path):
    path = record(tmp_path, order="runbook")[0]
    recorded = [(r["tick"], r["faults"]) for r in rows(path) if r["faults"]]
    replayed = run_drill(load_drill(path), "oracle", load_policy("oracle", Role.ORDER)).trace.rows
    assert [(r["tick"], r["faults"]) for r in replayed if r["faults"]] == recorded
    assert [r["repairs"] for r in replayed] != [r["repairs"] for r in rows(path)]  # another policy did play


HOST_FAILURE = (
    "name: host\nenv: shop\nticks: 20\nseed: 4\nfaults:\n  - {at: 3, fault: kill, target: db}\n"
    "  - {at: 3, fault: pause, target: cache}\n  - {at: 3, fault: kill, target: worker}\n"
    "  - {at: 9, fault: kill, target: queue}\n"
)


def test_a_trace_of_a_correlated_failure_replays_tick_for_tick(tmp_path):
    (tmp_path / "host.yaml").write_text(HOST_FAILURE)
    scenario = load_scenario(tmp_path / "host.yaml")
    played = run_drill(scenario, "runbook", load_policy("runbook", Role.ORDER))
    played.trace.write(tmp_path / "host.jsonl")
    recorded = rows(tmp_path / "host.jsonl")
    assert recorded[3]["faults"] == [
        {"fault": "kill", "target": "db"}, {"fault": "pause", "target": "cache"}, {"fault": "kill", "target": "worker"}
    ]  # fmt: skip
    drill = load_drill(tmp_path / "host.jsonl")
    assert drill.faults == (
        ScheduledFault(3, Fault.KILL, "db"), ScheduledFault(3, Fault.PAUSE, "cache"),
        ScheduledFault(3, Fault.KILL, "worker"), ScheduledFault(9, Fault.KILL, "queue"),
    )  # fmt: skip
    assert run_drill(drill, "runbook", load_policy("runbook", Role.ORDER)).trace.rows == recorded


def test_a_trace_row_with_two_faults_on_one_service_is_rejected_naming_both(tmp_path):
    good = record(tmp_path, episodes=1)[0].read_text().splitlines()
    row = json.loads(good[1])
    row["faults"] = [{"fault": "kill", "target": "db"}, {"fault": "pause", "target": "api"},
                     {"fault": "cpu_hog", "target": "db"}]  # fmt: skip
    with pytest.raises(ScenarioError, match=r"line 2: two faults on 'db' in one tick \(kill and cpu_hog\)"):
        load_drill(write_lines(tmp_path, [good[0], json.dumps(row), *good[2:]]))


def test_a_trace_carries_its_observations(tmp_path):
    first = rows(record(tmp_path, episodes=1)[0])[0]
    assert set(first["obs"]) == set(SHOP.names)
    assert all(len(v) == 15 and all(0.0 <= x <= 1.0 for x in v) for v in first["obs"].values())


def write_lines(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_malformed_trace_line_names_its_line(tmp_path):
    good = record(tmp_path, episodes=1)[0].read_text().splitlines()
    with pytest.raises(ScenarioError, match="line 3: not JSON"):
        load_drill(write_lines(tmp_path, [*good[:2], "{oops", *good[3:]]))


def test_a_trace_row_with_an_unknown_fault_is_rejected(tmp_path):
    good = record(tmp_path, episodes=1)[0].read_text().splitlines()
    row = json.loads(good[1])
    row["faults"] = [{"fault": "meteor", "target": "db"}]
    with pytest.raises(ScenarioError, match=r"line 2.*meteor"):
        load_drill(write_lines(tmp_path, [good[0], json.dumps(row), *good[2:]]))


def test_a_trace_needs_its_header(tmp_path):
    with pytest.raises(ScenarioError, match="header"):
        load_drill(write_lines(tmp_path, ['{"tick": 0}']))


def test_a_trace_on_another_topology_is_rejected(tmp_path):
    path = record(tmp_path, episodes=1)[0]
    with pytest.raises(ScenarioError, match="chain"):
        load_drill(path, env="chain")


def test_an_unknown_drill_suffix_is_rejected(tmp_path):
    path = tmp_path / "drill.txt"
    path.write_text("x")
    with pytest.raises(ScenarioError, match=r"\.jsonl"):
        load_drill(path)


@pytest.mark.parametrize("path", shipped_scenarios(), ids=lambda p: p.stem)
def test_a_scenario_exported_to_chaos_toolkit_reads_back_as_the_same_drill(tmp_path, path):
    scenario = load_scenario(path)
    exported = tmp_path / "experiment.json"
    exported.write_text(json.dumps(to_experiment(scenario)))
    back = read_experiment(exported)
    assert (back.topology.names, back.ticks, back.seed, back.faults, back.expect) == (
        scenario.topology.names, scenario.ticks, scenario.seed, scenario.faults, scenario.expect
    )  # fmt: skip


def action(func: str, pauses: dict | None = None, **arguments: object) -> dict:
    module = (
        "deeplops.chaostoolkit.probes" if func in ("slo_ok", "service_healthy") else "deeplops.chaostoolkit.actions"
    )
    return {"type": "action", "name": func, "pauses": pauses or {},
            "provider": {"type": "python", "module": module, "func": func, "arguments": arguments}}  # fmt: skip


def experiment(tmp_path: Path, method: list[dict], **extra: object) -> Path:
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({"title": "x", "description": "x", "method": method, **extra}))
    return path


def test_an_experiment_maps_injections_and_pauses_to_ticks_and_leaves_repairs_to_the_policy(tmp_path):
    path = experiment(tmp_path, [
        action("inject_fault", {"before": 5}, fault="kill", target="db", sandbox="s"),
        action("repair", {"after": 3}, repair="restart", target="db", sandbox="s"),
        action("inject_fault", {"after": 10}, fault="pause", target="queue", sandbox="s"),
        action("inject_fault", {}, fault="cpu_hog", target="api", sandbox="s"),  # after the 10 s pause above
    ], **{"steady-state-hypothesis": {"title": "t", "probes": [
        {"type": "probe", "name": "slo", "tolerance": True,
         "provider": {"type": "python", "module": "deeplops.chaostoolkit.probes", "func": "slo_ok",
                      "arguments": {"sandbox": "s"}}}]}})  # fmt: skip
    drill = read_experiment(path)
    assert drill.faults == (
        ScheduledFault(5, Fault.KILL, "db"), ScheduledFault(8, Fault.PAUSE, "queue"),
        ScheduledFault(18, Fault.CPU_HOG, "api"),
    )  # fmt: skip
    assert drill.expect.slo_at_end is True
    assert drill.ticks == 18 + 30  # no length given: the last fault plus a tail


def test_a_scenario_with_faults_at_one_tick_exports_them_with_no_pause_between(tmp_path):
    (tmp_path / "host.yaml").write_text(HOST_FAILURE)
    scenario = load_scenario(tmp_path / "host.yaml")
    method = to_experiment(scenario)["method"]
    assert [(a["provider"]["arguments"]["target"], a["pauses"].get("before", 0)) for a in method] == [
        ("db", 3), ("cache", 0), ("worker", 0), ("queue", 6)
    ]  # fmt: skip
    (tmp_path / "host.json").write_text(json.dumps(to_experiment(scenario)))
    assert read_experiment(tmp_path / "host.json").faults == scenario.faults


def test_injections_with_no_pause_between_are_one_tick(tmp_path):
    path = experiment(tmp_path, [
        action("inject_fault", {"before": 4}, fault="kill", target="db", sandbox="s"),
        action("inject_fault", {}, fault="kill", target="cache", sandbox="s"),
        action("inject_fault", {"before": 0.2}, fault="pause", target="queue", sandbox="s"),  # rounds to tick 4
        action("inject_fault", {"before": 1}, fault="kill", target="api", sandbox="s"),
    ])  # fmt: skip
    assert read_experiment(path).faults == (
        ScheduledFault(4, Fault.KILL, "db"), ScheduledFault(4, Fault.KILL, "cache"),
        ScheduledFault(4, Fault.PAUSE, "queue"), ScheduledFault(5, Fault.KILL, "api"),
    )  # fmt: skip


def test_two_injections_on_one_service_with_no_pause_between_are_rejected(tmp_path):
    path = experiment(tmp_path, [
        action("inject_fault", {"before": 4}, fault="kill", target="db", sandbox="s"),
        action("inject_fault", {}, fault="pause", target="db", sandbox="s"),
    ])  # fmt: skip
    with pytest.raises(ScenarioError, match=r"method\[1\].*pause on 'db' at tick 4, where kill already hits it"):
        read_experiment(path)


def test_an_experiment_with_an_action_deeplops_cannot_map_is_rejected(tmp_path):
    foreign = {"type": "action", "name": "drain-node",
               "provider": {"type": "python", "module": "chaosk8s.node.actions", "func": "drain_nodes"}}  # fmt: skip
    with pytest.raises(ScenarioError, match=r"method\[0\] 'drain-node': deeplops cannot map chaosk8s"):
        read_experiment(experiment(tmp_path, [foreign]))


def test_an_experiment_with_an_unknown_target_is_rejected(tmp_path):
    with pytest.raises(ScenarioError, match="ghost"):
        read_experiment(experiment(tmp_path, [action("inject_fault", fault="kill", target="ghost", sandbox="s")]))


def test_an_experiment_that_is_not_json_is_rejected(tmp_path):
    path = tmp_path / "e.json"
    path.write_text("{not json")
    with pytest.raises(ScenarioError, match="not JSON"):
        read_experiment(path)


def test_the_example_experiment_replays_on_the_sim_and_holds_for_the_runbook():
    example = Path(__file__).parent.parent / "examples" / "chaostoolkit-db-kill.json"
    drill = load_drill(example)
    assert drill.faults and drill.expect.slo_at_end is True
    assert run_drill(drill, "runbook", load_policy("runbook", Role.ORDER)).passed
