"""Self-play end to end at a tiny size, resuming, saved agents as policies, and their errors."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deeplops.actions import N_CHAOS_ACTIONS, N_ORDER_ACTIONS, Role
from deeplops.agents import AgentConfig
from deeplops.errors import ConfigError, PolicyError
from deeplops.game import Game
from deeplops.learn import train_and_report
from deeplops.policies import load_policy
from deeplops.report import Report
from deeplops.scenario import shipped_scenarios
from deeplops.selfplay import Progress, SelfPlay, SelfPlayConfig
from deeplops.sim import SimSandbox
from deeplops.topology import load_topology

TINY = AgentConfig(n_steps=32, batch_size=64, n_epochs=1, hidden=8, rounds=1, n_games=2, envs_per_game=4)
TINY_ORDER = AgentConfig(**{**TINY.__dict__, "imitate": "runbook", "imitation_steps": 512, "imitation_epochs": 1})


def tiny(generations: int = 2, seed: int = 0) -> SelfPlayConfig:
    return SelfPlayConfig(generations=generations, steps=2048, seed=seed, device="cpu", order=TINY_ORDER, chaos=TINY)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Report]:
    out = tmp_path_factory.mktemp("selfplay")
    report, _ = train_and_report(tiny(), out, episodes=2)
    return out, report


@pytest.mark.slow
def test_a_tiny_selfplay_writes_every_output(run):
    out, _ = run
    for name in (
        "order.zip",
        "chaos.zip",
        "report.md",
        "report.json",
        "learning.png",
        "crossplay.png",
        "baselines.png",
    ):
        assert (out / name).is_file(), name
    assert (out / "learning.png").read_bytes()[:4] == b"\x89PNG"
    assert list((out / "tb").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "chaos-g1.zip", "chaos-g2.zip", "order-g1.zip", "order-g2.zip"
    ]  # fmt: skip


@pytest.mark.slow
def test_the_report_covers_generations_crossplay_and_every_baseline(run):
    out, _ = run
    report = json.loads((out / "report.json").read_text())
    assert [g["generation"] for g in report["generations"]] == [1, 2]
    assert report["crossplay"]["order"] == ["runbook", "autoheal", "order-g1", "order-g2"]
    assert report["crossplay"]["chaos"] == ["random", "chaos-g1", "chaos-g2"]
    sections = report["final"]
    assert "bank (never trained on)" in sections and "held-out random topologies" in sections
    assert any(s.startswith("scenario ") for s in sections)
    for rows in sections.values():
        assert set(rows) == {"learned", "noop", "autoheal", "k8s", "runbook", "oracle"}
    assert report["throughput"]["order_steps"] == 2 * 2048
    assert report["throughput"]["cartpole_ppo_steps_per_s"] > 0
    assert "Cross-play" in (out / "report.md").read_text()
    faults = report["chaos_strength"]["faults"]
    assert list(faults) == ["runbook", "runbook-without-rollback", "autoheal", "learned"]
    assert "Faults it started on shop, by defender:" in (out / "report.md").read_text()


@pytest.mark.slow
def test_saved_agents_load_as_policies_of_their_role_and_act_within_the_mask(run):
    out, _ = run
    order = load_policy(str(out / "order.zip"), Role.ORDER)
    chaos = load_policy(str(out / "chaos.zip"), Role.CHAOS)
    game = Game(SimSandbox(load_topology("chain"), n_envs=3))
    game.reset([0, 1, 2])
    actions = order.act(game.order_obs(), game.order_mask())
    assert actions.shape == (3,) and game.order_mask()[np.arange(3), actions].all()
    actions = chaos.act(game.chaos_obs(), game.chaos_mask())
    assert actions.shape == (3,) and game.chaos_mask()[np.arange(3), actions].all()
    assert order.model.action_space.n == N_ORDER_ACTIONS and chaos.model.action_space.n == N_CHAOS_ACTIONS


@pytest.mark.slow
def test_a_saved_agent_of_the_wrong_role_is_refused(run):
    out, _ = run
    with pytest.raises(PolicyError, match="chaos agent"):
        load_policy(str(out / "chaos.zip"), Role.ORDER)


@pytest.mark.slow
def test_evaluate_accepts_a_saved_agent_as_the_order_policy(run, cli, tmp_path):
    out, _ = run
    path = tmp_path / "m.json"
    result = cli("evaluate", "--order", str(out / "order.zip"), "--episodes", "2", "--json", str(path))
    assert result.code == 0, result.err
    assert json.loads(path.read_text())["episodes"] == 2


@pytest.mark.slow
def test_a_run_resumes_after_its_last_completed_generation(run, tmp_path):
    out, _ = run
    labels: list[str] = []
    resumed = SelfPlay(tiny(generations=3), out, Progress(update=lambda label, done, total: labels.append(label)))
    assert resumed.completed() == 2
    resumed.run()
    assert labels and all(label.startswith("g3") for label in labels)
    assert (out / "checkpoints" / "order-g3.zip").is_file()


@pytest.mark.slow
def test_a_run_with_other_settings_is_not_resumed_into(run):
    out, _ = run
    with pytest.raises(ConfigError, match="other settings"):
        SelfPlay(tiny(seed=5), out).completed()


@pytest.mark.slow
def test_the_same_seed_gives_the_same_report_figures(run, tmp_path):
    _, first = run
    again, _ = train_and_report(tiny(), tmp_path, episodes=2)
    for key in ("generations", "crossplay", "final", "chaos_strength"):
        assert getattr(again, key) == getattr(first, key), key


@pytest.mark.slow
def test_the_real_replay_section_reads_the_same_on_any_backend(run, tmp_path):
    from dataclasses import replace

    from deeplops.report import real_drill, write

    out, report = run
    replay = real_drill(tiny(), out / "order.zip", Progress())  # the sim stands in for real containers
    data = replay.to_json()
    assert list(data) == ["scenario", "backend", "learned", "runbook"] and data["backend"] == "sim"
    assert list(data["learned"]) == ["availability", "mttr_mean", "unrecovered", "hypothesis_met"]
    write(tmp_path, replace(report, real=replay))
    assert json.loads((tmp_path / "report.json").read_text())["real"] == data
    assert f"Scenario {data['scenario']}, replayed on sim:" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_a_topology_without_a_shipped_scenario_is_noted_in_the_real_replay_section(run, tmp_path):
    from dataclasses import replace

    from deeplops.report import real_drill

    out, _ = run
    lone = tmp_path / "lone.yaml"
    lone.write_text("name: lone\nservices:\n  web: {entry: true}\n")
    replay = real_drill(replace(tiny(), train_on=(str(lone),)), out / "order.zip", Progress())
    assert replay.to_json() == {"note": "no shipped scenario runs on lone: nothing to replay on sim"}


def test_a_file_that_is_not_an_agent_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.zip"
    text.write_text("hello")
    with pytest.raises(PolicyError, match="not a saved agent"):
        load_policy(str(text), Role.ORDER)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("readme.txt", "not an agent")
    with pytest.raises(PolicyError, match="not a saved agent"):
        load_policy(str(other), Role.ORDER)


def test_a_selfplay_config_reads_no_file_unless_asked(monkeypatch):
    def no_reading(*args: object) -> None:
        raise AssertionError("an agent config file was read")

    monkeypatch.setattr("deeplops.selfplay.load_agent_config", no_reading)
    config = SelfPlayConfig(device="cpu", order=TINY_ORDER, chaos=TINY)
    assert (config.order, config.chaos) == (TINY_ORDER, TINY)


def test_a_selfplay_config_from_files_holds_the_shipped_agent_configs():
    from deeplops.agents import load_agent_config

    config = SelfPlayConfig.from_files(generations=2, device="cpu")
    assert config.order == load_agent_config(Role.ORDER) and config.chaos == load_agent_config(Role.CHAOS)
    assert config.generations == 2


def test_selfplay_refuses_cuda_where_there_is_none(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="cuda"):
        SelfPlayConfig(device="cuda", order=TINY, chaos=TINY)


def test_selfplay_rejects_bad_counts_on_the_command_line(cli):
    result = cli("selfplay", "--generations", "0")
    assert result.code == 2 and "--generations" in result.err


@pytest.mark.parametrize("teacher", ["oracle", "nobody"])
def test_selfplay_refuses_a_teacher_that_is_no_fair_baseline_before_any_work(cli, tmp_path, teacher):
    out = tmp_path / "run"
    result = cli("selfplay", "--imitate", teacher, "--out", str(out))
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        f"deeplops: error: --imitate: expected none or one of noop, random, autoheal, k8s, runbook, got '{teacher}'"
    ]
    assert not out.exists()


@pytest.mark.docker
@pytest.mark.slow
def test_selfplay_on_docker_fine_tunes_on_real_containers(run, docker_engine, monkeypatch, tmp_path):
    from deeplops.dockerbox import stack

    # No replay of a scenario on real containers here: tests/test_ray.py's fine-tuning plays it (the
    # same drill, side by side on two actors), and it would take this test a minute more.
    monkeypatch.setattr("deeplops.report.shipped_scenarios", lambda: [])
    start, _ = run
    config = SelfPlayConfig(generations=1, steps=12, ticks=12, seed=0, device="cpu", order=TINY_ORDER, chaos=TINY,
                            backend="docker", start_from=str(start))  # fmt: skip
    out = tmp_path / "real"
    report, _ = train_and_report(config, out, episodes=2)
    assert (out / "order.zip").is_file() and (out / "chaos.zip").is_file()
    assert report.throughput.order_steps == 12 and report.throughput.chaos_steps == 12
    # Real time: at least one second a tick, for both roles.
    assert report.throughput.order_s >= 12 and report.throughput.chaos_s >= 12
    assert report.real is not None
    assert report.real.to_json() == {"note": "no shipped scenario runs on shop: nothing to replay on docker"}
    # Nothing left behind (sandboxes are named after the process that made them; other test
    # workers may have their own up).
    assert not any(name.startswith(f"deeplops-{os.getpid()}") for name in stack.sandboxes(stack.connect()))


@pytest.mark.parametrize(("role", "hosts", "n_steps"), [(Role.ORDER, 1, 64), (Role.ORDER, 4, 25), (Role.CHAOS, 1, 50),
                                                    (Role.CHAOS, 4, 12)])  # fmt: skip
def test_on_real_containers_each_docker_engine_plays_one_game_and_a_rollout_fits_the_run(role, hosts, n_steps):
    # 100 order and 50 chaos transitions a generation (the chaos agent's steps_share is 0.5),
    # shared by the engines: one game each, a rollout no longer than the role's share.
    config = SelfPlayConfig.from_files(steps=100, backend="docker")
    agent = config.agent(role, hosts)
    assert (agent.n_games, agent.envs_per_game, agent.n_steps) == (hosts, 1, n_steps)
    assert agent.batch_size == min(1024, n_steps * hosts) and agent.imitation_steps == 0


def test_selfplay_from_a_directory_without_agents_is_a_clear_error(cli, tmp_path):
    result = cli("selfplay", "--from", str(tmp_path))
    assert result.code == 2 and "order.zip" in result.err


@pytest.mark.parametrize("path", shipped_scenarios(), ids=lambda p: p.stem)
def test_the_shipped_order_agent_passes_every_shipped_drill(path):
    from deeplops.catalog import data_dir
    from deeplops.drill import run_drill
    from deeplops.scenario import load_scenario

    agent = load_policy(str(data_dir("agents") / "pretrained" / "order.zip"), Role.ORDER)
    run = run_drill(load_scenario(path), "pretrained", agent)
    assert run.passed, run.checks


def test_the_shipped_chaos_agent_loads_and_acts_within_the_mask():
    from deeplops.catalog import data_dir

    chaos = load_policy(str(data_dir("agents") / "pretrained" / "chaos.zip"), Role.CHAOS)
    game = Game(SimSandbox(load_topology("bank"), 4))
    game.reset([0, 1, 2, 3])
    chaos.reset(4)
    for _ in range(20):
        actions = game.decide(chaos)
        assert game.chaos_mask()[np.arange(4), actions].all()
        game.step(actions, np.zeros(4, np.int64))


def _summary(availability: float, repairs: int = 10, faults: int = 10, data_loss: int = 0, mttr: float = 2.0):
    from deeplops.metrics import Summary

    return Summary(availability=availability, mttr_mean=mttr, mttr_p95=mttr, faults_injected=faults,
                   faults_recovered=faults, unrecovered=0, relapses=0, repairs=repairs, wasted_repairs=0,
                   data_loss=data_loss, invalid_actions=0, episodes=4, ticks=800)  # fmt: skip


def _section(learned):
    from deeplops.metrics import Summary

    rows: dict[str, Summary] = {
        name: _summary(0.5, mttr=10.0) for name in ("noop", "autoheal", "k8s", "runbook", "oracle")
    }
    return {"learned": learned, **rows}


@pytest.mark.parametrize(
    ("learned", "failed"),
    [
        (_summary(0.9), set()),
        (_summary(0.9, repairs=21, faults=10), {"repairs per fault <= 2"}),
        (_summary(0.9, data_loss=1), {"no data lost"}),
        (_summary(0.45), {"availability >= runbook - 0.01", "availability >= autoheal + 0.05"}),
    ],
    ids=["clean", "a storm", "data lost", "below the runbook"],
)
def test_the_reports_bar_fails_a_storm_and_lost_data_whatever_the_availability(learned, failed):
    from deeplops.report import check_bar

    checks = check_bar("held-out random topologies", _section(learned))
    assert {name for name, ok in checks.items() if not ok} == failed


def test_the_chaos_repertoire_counts_each_fault_the_game_started_by_its_label():
    from functools import partial

    from deeplops.evaluate import Match, play
    from deeplops.metrics import summarize
    from deeplops.report import chaos_repertoire

    random_chaos = partial(load_policy, "random", Role.CHAOS)
    runbook = partial(load_policy, "runbook", Role.ORDER)
    counts = chaos_repertoire(random_chaos, [("runbook", runbook)], episodes=4, seed=3)
    injected = summarize(play(Match(load_topology("shop"), runbook(), random_chaos()), 4, seed=3)).faults_injected
    assert list(counts) == ["runbook"]
    assert sum(counts["runbook"].values()) == injected > 0
    assert set(counts["runbook"]) <= {"kill", "pause", "cpu_hog", "disk_full", "net_saturation", "bad_deploy",
                                      "memory_leak", "conn_leak"}  # fmt: skip
    assert list(counts["runbook"].values()) == sorted(counts["runbook"].values(), reverse=True)


def test_the_chaos_agent_trains_against_the_runbook_with_and_without_its_rollback_step(tmp_path):
    pool = SelfPlay(tiny(), tmp_path).order_pool(0)
    assert [make().name for make in pool] == ["runbook", "runbook-without-rollback"]
