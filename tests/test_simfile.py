"""``--sim FILE``: the simulator's dynamics, changed from the calibrated defaults by a YAML file.

Specifications: a file changes exactly the fields it names (a symptom table keeps the fields it
does not name); evaluate and replay play under the changed dynamics; a bad file exits 2 with one
line naming the field, before any work.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from deeplops.errors import ConfigError
from deeplops.sim import SimParams

ROOT = Path(__file__).resolve().parent.parent
CASCADE = ROOT / "scenarios" / "db-crash-cascade.yaml"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sim.yaml"
    path.write_text(text)
    return path


def test_a_file_changes_exactly_the_fields_it_names(tmp_path):
    params = SimParams.from_file(_file(tmp_path, "restart_ticks: 3\ncpu_hog: {probe_fail: 0.3}\n"))
    defaults = SimParams()
    assert params.restart_ticks == 3
    assert params.cpu_hog.probe_fail == 0.3
    assert params.cpu_hog.latency_s == defaults.cpu_hog.latency_s  # the table's other fields kept
    unchanged = [f.name for f in fields(SimParams) if f.name not in ("restart_ticks", "cpu_hog")]
    assert all(getattr(params, name) == getattr(defaults, name) for name in unchanged)


def test_an_empty_mapping_is_the_calibrated_defaults(tmp_path):
    assert SimParams.from_file(_file(tmp_path, "{}\n")) == SimParams()


def test_evaluate_plays_under_the_files_dynamics(cli, tmp_path):
    slow = _file(tmp_path, "restart_ticks: 5\nrecreate_ticks: 5\n")
    results = {}
    for name, extra in (("default", ()), ("slow", ("--sim", str(slow)))):
        path = tmp_path / f"{name}.json"
        result = cli("evaluate", "--order", "oracle", "--episodes", "8", "--json", str(path), *extra)
        assert result.code == 0, result.err
        results[name] = json.loads(path.read_text())
    # Each restart (and recreate) keeps its service down 5 ticks instead of 1 (0): faults take longer to recover.
    assert results["slow"]["mttr_mean"] > results["default"]["mttr_mean"] + 2
    assert results["slow"]["availability"] < results["default"]["availability"]
    assert results["slow"]["sim"] == str(slow) and "sim" not in results["default"]


def test_replay_plays_under_the_files_dynamics(cli, tmp_path):
    slow = _file(tmp_path, "restart_ticks: 4\n")
    mttr = {}
    for name, extra in (("default", ()), ("slow", ("--sim", str(slow)))):
        path = tmp_path / f"{name}.json"
        cli("replay", str(CASCADE), "--order", "oracle", "--json", str(path), *extra)
        mttr[name] = json.loads(path.read_text())["mttr_mean"]
    assert mttr["slow"] > mttr["default"]


BAD_FILES = {
    "an unknown field": ("restart_tick: 3\n", ("unknown field 'restart_tick'", "restart_ticks")),
    "a negative time": ("restart_ticks: -1\n", ("restart_ticks", "-1")),
    "a time past its bound": ("restart_ticks: 100000\n", ("restart_ticks", "3600")),
    "a fraction of a tick": ("probe_delay: 1.5\n", ("probe_delay", "whole number")),
    "a word for a number": ("probe_timeout_s: fast\n", ("probe_timeout_s", "fast")),
    "noise past one half": ("probe_noise: 0.9\n", ("probe_noise", "0.9")),
    "a symptom that is no mapping": ("paused: 3\n", ("'paused'", "mapping")),
    "an unknown symptom field": ("paused: {speed: 1}\n", ("'paused'", "speed")),
    "a symptom range that is no pair": ("paused: {cpu: 2}\n", ("'paused'", "cpu")),
    "a list": ("- restart_ticks\n", ("expected a YAML mapping", "list")),
}


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("command", ["evaluate", "replay"])
def test_a_bad_file_is_one_line_naming_the_field_before_any_work(cli, tmp_path, case, command):
    text, says = BAD_FILES[case]
    path, out = _file(tmp_path, text), tmp_path / "m.json"
    args = ("evaluate",) if command == "evaluate" else ("replay", str(CASCADE))
    result = cli(*args, "--order", "runbook", "--sim", str(path), "--json", str(out))
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert all(fragment in lines[0] for fragment in says), lines[0]
    assert not out.exists()


def test_sim_on_real_containers_is_refused_before_any_container(cli, tmp_path):
    result = cli("evaluate", "--order", "runbook", "--backend", "docker", "--sim", str(_file(tmp_path, "{}\n")))
    assert result.code == 2 and "--sim applies to the simulator only" in result.err


def test_a_missing_file_names_itself():
    with pytest.raises(ConfigError, match=r"nowhere\.yaml"):
        SimParams.from_file(Path("/nowhere.yaml"))


def test_selfplay_records_its_dynamics_and_a_run_with_others_is_not_resumed(tmp_path):
    from deeplops.agents import AgentConfig
    from deeplops.selfplay import SelfPlay, SelfPlayConfig

    tiny = AgentConfig(n_steps=8, batch_size=64, n_epochs=1, hidden=8, rounds=1, n_games=1, envs_per_game=8)
    slow = SimParams(restart_ticks=3)
    config = SelfPlayConfig(generations=1, steps=64, device="cpu", order=tiny, chaos=tiny, sim=slow)
    SelfPlay(config, tmp_path).run()
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["config"]["sim"]["restart_ticks"] == 3
    assert SelfPlay(config, tmp_path).completed() == 1
    calibrated = SelfPlayConfig(generations=1, steps=64, device="cpu", order=tiny, chaos=tiny)
    with pytest.raises(ConfigError, match="other settings"):
        SelfPlay(calibrated, tmp_path).completed()


def test_the_report_measures_under_the_runs_dynamics():
    from deeplops.actions import Role
    from deeplops.policies import load_policy
    from deeplops.report import figures
    from deeplops.topology import load_topology

    def mttr(params: SimParams | None) -> float:
        oracle, chaos = load_policy("oracle", Role.ORDER), load_policy("random", Role.CHAOS)
        summary = figures(oracle, chaos, load_topology("shop"), 8, 0, params)
        assert summary.mttr_mean is not None
        return summary.mttr_mean

    assert mttr(SimParams(restart_ticks=5, recreate_ticks=5)) > mttr(None) + 2


def test_selfplay_with_a_bad_file_writes_nothing(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("selfplay", "--sim", str(_file(tmp_path, "restart_ticks: fast\n")), "--out", str(out))
    assert result.code == 2 and "restart_ticks" in result.err
    assert not out.exists()
