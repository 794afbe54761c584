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
        action("inject_fault", {}, fault="cpu_hog", target="api", sandbox="s"),  # same instant: next tick
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
