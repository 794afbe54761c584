"""The command line: contract output, and bad input as exit status 2 with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONTRACT_FIELDS = {
    "availability", "mttr_mean", "mttr_p95", "faults_injected", "faults_recovered",
    "unrecovered", "relapses", "repairs", "wasted_repairs", "episodes",
}  # fmt: skip
SHIPPED = Path(__file__).resolve().parent.parent / "scenarios"


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0]


def test_evaluate_writes_every_contract_field(cli, tmp_path):
    path = tmp_path / "m.json"
    result = cli("evaluate", "--order", "runbook", "--episodes", "3", "--json", str(path))
    assert result.code == 0, result.err
    metrics = json.loads(path.read_text())
    assert set(metrics) >= CONTRACT_FIELDS
    assert metrics["episodes"] == 3
    assert 0.0 <= metrics["availability"] <= 1.0


def test_evaluate_prints_a_table_with_the_policy(cli):
    result = cli("evaluate", "--order", "autoheal", "--episodes", "2")
    assert result.code == 0
    assert "autoheal" in result.out and "avail" in result.out


def test_evaluate_is_reproducible_with_the_same_seed(cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    cli("evaluate", "--order", "runbook", "--episodes", "4", "--seed", "7", "--json", str(a))
    cli("evaluate", "--order", "runbook", "--episodes", "4", "--seed", "7", "--json", str(b))
    assert json.loads(a.read_text()) == json.loads(b.read_text())


def test_evaluate_on_scenarios_reports_each_one(cli, tmp_path):
    path = tmp_path / "m.json"
    files = sorted(SHIPPED.glob("*.yaml"))[:2]
    result = cli(
        "evaluate", "--order", "runbook", *[a for f in files for a in ("--scenario", str(f))], "--json", str(path)
    )
    assert result.code == 0, result.err
    metrics = json.loads(path.read_text())
    assert len(metrics["scenarios"]) == 2
    assert metrics["faults_injected"] == sum(s["faults_injected"] for s in metrics["scenarios"].values())


def test_evaluate_record_writes_one_trace_per_episode(cli, tmp_path):
    result = cli("evaluate", "--order", "runbook", "--episodes", "2", "--record", str(tmp_path / "traces"))
    assert result.code == 0
    traces = sorted((tmp_path / "traces").glob("*.jsonl"))
    assert len(traces) == 2
    lines = traces[0].read_text().splitlines()
    assert "header" in json.loads(lines[0])
    assert len(lines) == 1 + 200
    assert set(json.loads(lines[1])) >= {"tick", "faults", "repairs", "health", "slo"}


def test_unknown_policy_is_a_one_line_error(cli):
    assert_one_line_error(cli("evaluate", "--order", "magic"), "magic", "runbook")


def test_unknown_chaos_policy_is_a_one_line_error(cli):
    assert_one_line_error(cli("evaluate", "--order", "noop", "--chaos", "runbook"), "runbook", "random")


def test_unknown_backend_is_a_one_line_error(cli):
    assert_one_line_error(cli("evaluate", "--order", "noop", "--backend", "k8s"), "k8s", "sim")


def test_non_integer_option_is_a_one_line_error(cli):
    assert_one_line_error(cli("evaluate", "--order", "noop", "--episodes", "many"), "--episodes")


def test_zero_episodes_is_a_one_line_error(cli):
    assert_one_line_error(cli("evaluate", "--order", "noop", "--episodes", "0"), "--episodes", "0")


def test_missing_scenario_file_is_a_one_line_error(cli, tmp_path):
    assert_one_line_error(cli("replay", str(tmp_path / "nope.yaml"), "--order", "runbook"), "not found")


def test_malformed_scenario_yaml_is_a_one_line_error(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nfaults: [\n  {at: 1\n")
    assert_one_line_error(cli("replay", str(path), "--order", "runbook"), "malformed YAML", "line")


def test_unknown_fault_in_scenario_is_a_one_line_error(cli, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nenv: shop\nticks: 20\nfaults:\n  - {at: 1, fault: meteor, target: db}\n")
    assert_one_line_error(cli("replay", str(path), "--order", "runbook"), "meteor", "disk_full")


def test_unknown_service_in_scenario_is_a_one_line_error(cli, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nenv: shop\nticks: 20\nfaults:\n  - {at: 1, fault: kill, target: mainframe}\n")
    assert_one_line_error(cli("replay", str(path), "--order", "runbook"), "mainframe", "gateway")


def test_negative_ticks_is_a_one_line_error(cli, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nenv: shop\nticks: -5\nfaults: []\n")
    assert_one_line_error(cli("replay", str(path), "--order", "runbook"), "ticks", "-5")


def test_topology_with_unknown_dependency_is_a_one_line_error(cli, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nservices:\n  web: {depends_on: [ghost], entry: true}\n")
    assert_one_line_error(cli("evaluate", "--order", "noop", "--env", str(path)), "ghost")


def test_bad_input_writes_no_json(cli, tmp_path):
    path = tmp_path / "m.json"
    cli("evaluate", "--order", "magic", "--json", str(path))
    assert not path.exists()


def test_replay_passes_a_met_hypothesis_and_draws_the_plot(cli, tmp_path):
    png, js = tmp_path / "t.png", tmp_path / "r.json"
    scenario = SHIPPED / "db-crash-cascade.yaml"
    result = cli("replay", str(scenario), "--order", "oracle", "--plot", str(png), "--json", str(js))
    assert result.code == 0, result.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(js.read_text())
    assert report["passed"] is True
    assert [c["met"] for c in report["expect"]] == [True, True]  # availability, SLO at the end
    assert report["faults_injected"] == 2


def test_replay_exits_1_when_the_hypothesis_fails(cli, tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: s\nenv: shop\nticks: 40\nexpect: {availability: 0.9}\n"
        "faults:\n  - {at: 2, fault: disk_full, target: db}\n"
    )
    result = cli("replay", str(scenario), "--order", "noop")
    assert result.code == 1
    assert "NOT met" in result.out


def test_replay_of_the_same_scenario_is_identical(cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    scenario = str(SHIPPED / "gateway-flood.yaml")
    cli("replay", scenario, "--order", "runbook", "--json", str(a))
    cli("replay", scenario, "--order", "runbook", "--json", str(b))
    assert json.loads(a.read_text()) == json.loads(b.read_text())


@pytest.mark.parametrize("command", ["evaluate", "replay", "bench", "scenario", "scenario export", "scenario list"])
def test_every_command_explains_itself(cli, command):
    result = cli(*command.split(), "--help")
    assert result.code == 0
    assert "Usage" in result.out


def test_version_is_printed(cli):
    from deeplops import __version__

    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"deeplops {__version__}"


def test_replay_compares_several_policies_in_one_table_plot_and_json(cli, tmp_path):
    png, js = tmp_path / "c.png", tmp_path / "c.json"
    scenario = str(SHIPPED / "flapping-db.yaml")
    result = cli("replay", scenario, "--order", "runbook", "--order", "autoheal", "--plot", str(png), "--json", str(js))
    assert result.code == 1  # autoheal fails the drill's hypothesis: the drill gates
    report = json.loads(js.read_text())
    assert set(report["policies"]) == {"runbook", "autoheal"}
    assert report["policies"]["runbook"]["passed"] is True
    assert report["policies"]["autoheal"]["passed"] is False
    assert report["policies"]["runbook"]["availability"] > report["policies"]["autoheal"]["availability"]
    assert "runbook" in result.out and "autoheal" in result.out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_replay_of_a_trace_rejects_a_topology_that_differs(cli, tmp_path):
    cli("evaluate", "--order", "runbook", "--episodes", "1", "--record", str(tmp_path))
    result = cli("replay", str(tmp_path / "episode-0000.jsonl"), "--order", "runbook", "--env", "bank")
    assert_one_line_error(result, "bank")


def test_scenario_export_writes_an_experiment_that_replays_like_the_scenario(cli, tmp_path):
    experiment, a, b = tmp_path / "e.json", tmp_path / "a.json", tmp_path / "b.json"
    scenario = str(SHIPPED / "gateway-flood.yaml")
    assert cli("scenario", "export", scenario, "--out", str(experiment)).code == 0
    assert json.loads(experiment.read_text())["method"][0]["provider"]["func"] == "inject_fault"
    cli("replay", scenario, "--order", "runbook", "--json", str(a))
    cli("replay", str(experiment), "--order", "runbook", "--json", str(b))
    keys = ("availability", "mttr_mean", "faults_injected", "repairs")
    assert [json.loads(a.read_text())[k] for k in keys] == [json.loads(b.read_text())[k] for k in keys]


def test_scenario_export_of_an_unknown_format_is_a_one_line_error(cli):
    result = cli("scenario", "export", str(SHIPPED / "gateway-flood.yaml"), "--format", "litmus")
    assert_one_line_error(result, "litmus")


def test_scenario_list_names_every_shipped_scenario(cli):
    result = cli("scenario", "list", "--markdown")
    assert result.code == 0
    for path in SHIPPED.glob("*.yaml"):
        assert f"| {path.stem} |" in result.out
