"""Self-play's rollouts and the report's games on a Ray cluster (deeplops/raypool.py).

Specifications: a run with ``--ray`` plays its rollouts on every node of the cluster and reports
what a local run reports; the report's games are played on every node and give the figures the
same games give here; an actor killed mid-rollout (or mid-game) is replaced and its rollout (or its
batch of games) redone; a run interrupted mid-generation resumes from its last completed
generation; a cluster that cannot be reached and a missing Ray exit 2 with one line. On real
containers each actor plays its games on its own node's Docker engine, and a node without one
stops the run with exit 2 naming the node. The cluster tests start a real two-node cluster on this
machine (a head and a second node of one CPU each) and end it after; the second node's
``DOCKER_HOST`` is a socket forwarding to this machine's engine, which records what it is sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_proxy import EngineProxy

from deeplops.actions import Role
from deeplops.agents import AgentConfig
from deeplops.catalog import data_dir
from deeplops.evaluate import Games, play_batch, play_here
from deeplops.game import GameConfig
from deeplops.policies import load_policy
from deeplops.report import Report, build_report
from deeplops.selfplay import GameMaker, Progress, SelfPlay, SelfPlayConfig, make_model, pool_sampler, ppo_settings
from deeplops.topology import load_topology

TINY = AgentConfig(n_steps=16, batch_size=64, n_epochs=1, hidden=8, rounds=1, n_games=2, envs_per_game=4)
PER_ROLLOUT = TINY.n_steps * TINY.n_games * TINY.envs_per_game


def tiny(generations: int = 1) -> SelfPlayConfig:
    return SelfPlayConfig(generations=generations, steps=PER_ROLLOUT, seed=0, device="cpu", order=TINY, chaos=TINY,
                          ticks=24)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The learner on one thread: the cluster's actors take the machine's other core (two spinning
    OpenMP threads beside them made the report's games six times slower on 2 cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[str, set[str], EngineProxy]]:
    """A running two-node Ray cluster on this machine: its head's address, its nodes' ids, and the
    Docker engine of its second node (a proxy of this machine's; the head uses the engine's own socket)."""
    from ray.cluster_utils import Cluster

    engine = EngineProxy(tmp_path_factory.mktemp("engine") / "docker.sock")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.delenv("DOCKER_HOST", raising=False)
        node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
        nodes = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        try:
            env.setenv("DOCKER_HOST", f"unix://{engine.path}")  # a node's processes take its environment
            nodes.add_node(**node)
            env.delenv("DOCKER_HOST")
            nodes.wait_for_nodes()
            yield nodes.address, {n.node_id for n in nodes.list_all_nodes()}, engine
        finally:
            nodes.shutdown()


def _fields(value: Any) -> Any:
    """The shape of a JSON value: its keys, all the way down, without the figures."""
    if isinstance(value, dict):
        return {key: _fields(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fields(item) for item in value[:1]]
    return type(value).__name__


@pytest.mark.slow
def test_selfplay_on_ray_plays_rollouts_on_both_nodes_and_reports_as_a_local_run(cluster, cli, monkeypatch, tmp_path):
    monkeypatch.setattr("deeplops.selfplay.load_agent_config", lambda role, path=None: TINY)  # a tiny run
    run = ("selfplay", "--generations", "1", "--steps", str(PER_ROLLOUT), "--device", "cpu", "--out")
    on_ray = cli(*run, str(tmp_path / "ray"), "--ray", cluster[0], "--workers", "2")
    assert on_ray.code == 0, on_ray.err
    assert f"rollouts played by 2 Ray workers on 2 nodes of {cluster[0]}" in on_ray.out
    here = cli(*run, str(tmp_path / "local"))
    assert here.code == 0, here.err
    reports = [json.loads((tmp_path / name / "report.json").read_text()) for name in ("ray", "local")]
    assert _fields(reports[0]) == _fields(reports[1])
    assert reports[0]["config"] == reports[1]["config"]  # where rollouts ran is no setting of the run
    assert reports[0]["throughput"]["order_steps"] == PER_ROLLOUT
    written = [sorted(p.name for p in (tmp_path / name).iterdir()) for name in ("ray", "local")]
    assert written[0] == written[1]


class _KillerChaos:
    """Random chaos whose process dies at its third move while ``marker`` exists (taking it away first,
    so the actor that replaces it lives)."""

    def __init__(self, marker: Path) -> None:
        self.inner = load_policy("random", Role.CHAOS)
        self.name, self.role, self.privileged = "killer", Role.CHAOS, False
        self.marker, self.moves = marker, 0

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        self.inner.reset(n_envs, seed)

    def act(self, obs: Any, mask: np.ndarray) -> np.ndarray:
        import os

        self.moves += 1
        if self.moves == 3:
            try:
                self.marker.unlink()
            except FileNotFoundError:
                pass  # the other actor died already
            else:
                os._exit(1)
        return self.inner.act(obs, mask)


@pytest.mark.slow
def test_an_actor_killed_mid_rollout_is_replaced_and_its_rollout_redone(cluster, tmp_path):
    from ray import cloudpickle

    from deeplops.raypool import connect

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    marker = tmp_path / "die"
    marker.touch()
    shop = load_topology("shop")
    games = GameMaker(Role.ORDER, lambda rng: shop, pool_sampler([lambda: _KillerChaos(marker)]), TINY.envs_per_game,
                      GameConfig(max_ticks=24), None, "sim")  # fmt: skip
    try:
        with connect(cluster[0], workers=2) as on_ray:
            rollouts = on_ray.rollouts(games, TINY.n_games, ppo_settings(TINY), seed=0, env_seed=1)
            model = make_model(Role.ORDER, TINY, rollouts, 0, "cpu")
            model.learn(2 * PER_ROLLOUT)
            rollouts.close()
            assert not marker.exists(), "no actor died"
            assert on_ray.replaced == 1
            assert model.num_timesteps == 2 * PER_ROLLOUT
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_a_run_on_the_cluster_interrupted_mid_generation_resumes_from_its_last_completed_one(cluster, tmp_path):
    from deeplops.raypool import connect

    def interrupt(label: str, done: int, total: int) -> None:
        if label.startswith("g2") and done:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with connect(cluster[0], workers=2) as on_ray:
        SelfPlay(tiny(generations=1), out, cluster=on_ray).run()
        with pytest.raises(KeyboardInterrupt):
            SelfPlay(tiny(generations=2), out, Progress(update=interrupt), cluster=on_ray).run()
        labels: list[str] = []
        resumed = SelfPlay(tiny(generations=2), out, Progress(update=lambda label, *_: labels.append(label)), on_ray)
        assert resumed.completed() == 1
        resumed.run()
        assert on_ray.nodes == cluster[1]  # as the actors recorded them: every node played rollouts
    assert labels and all(label.startswith("g2") for label in labels)
    assert (out / "checkpoints" / "order-g2.zip").is_file() and (out / "checkpoints" / "chaos-g2.zip").is_file()


PRETRAINED = data_dir("agents") / "pretrained"
"""The shipped agents: the measured run's checkpoints."""
SCENARIOS = [data_dir("scenarios") / "flapping-db.yaml", data_dir("scenarios") / "chain-cascade.yaml"]
"""The shipped scenarios the measured report plays (two of them, to keep it short)."""


def _measured(out: Path, cluster: Any = None) -> Report:
    """The report of a two-generation run whose checkpoints are the shipped pretrained agents (no
    training), cut to two scenarios and two held-out topologies, its games played on ``cluster``
    (None: here)."""
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True)
    for role in Role:
        for g in (1, 2):
            shutil.copyfile(PRETRAINED / f"{role.value}.zip", checkpoints / f"{role.value}-g{g}.zip")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("deeplops.report.cartpole_ppo_rate", lambda: 0.0)  # no game: not what is compared
        patch.setattr("deeplops.report.shipped_scenarios", lambda: SCENARIOS)
        patch.setattr("deeplops.report.HELD_OUT_SEEDS", range(10_000, 10_002))
        return build_report(SelfPlay(tiny(generations=2), out, cluster=cluster), episodes=4)


@pytest.fixture(scope="module")
def measured(cluster, tmp_path_factory) -> tuple[Report, Report, set[str]]:
    """The same report measured here and on the cluster's two actors, and the nodes its games were played on."""
    from deeplops.raypool import connect

    here = _measured(tmp_path_factory.mktemp("here"))
    with connect(cluster[0], workers=2) as on_ray:
        away = _measured(tmp_path_factory.mktemp("away"), on_ray)
        return here, away, on_ray.evaluation_nodes


@pytest.mark.slow
def test_the_reports_games_on_the_cluster_give_the_figures_of_the_same_games_here(measured):
    here, away, _ = measured
    for key in ("generations", "crossplay", "final", "chaos_strength"):
        assert getattr(away, key) == getattr(here, key), key
    sections = list(here.final)
    assert sections[:2] == ["scenario flapping-db", "scenario chain-cascade"]
    availabilities = {round(row.availability, 6) for rows in here.final.values() for row in rows.values()}
    assert len(availabilities) > 1  # games were played, and not all alike


@pytest.mark.slow
def test_the_reports_games_are_played_on_every_node_of_the_cluster(cluster, measured):
    _, _, nodes = measured
    assert nodes == cluster[1]


def test_a_games_batches_played_apart_with_fresh_policies_give_the_results_played_here():
    # What the cluster relies on: a batch's results depend on nothing but the games, its first
    # episode and its size, whoever plays it and whatever was played before.
    games = Games(load_topology("shop"), partial(load_policy, "runbook", Role.ORDER),
                  partial(load_policy, "random", Role.CHAOS), episodes=5, seed=3, game=GameConfig(max_ticks=30),
                  batch=2)  # fmt: skip
    assert games.batches() == [(0, 2), (2, 2), (4, 1)]
    apart = [episode for first, n in reversed(games.batches()) for episode in play_batch(games.match(), 3, first, n)]
    [here] = play_here([games])
    assert len(here) == 5
    assert apart == here[4:] + here[2:4] + here[:2]


@pytest.mark.slow
def test_an_actor_killed_mid_evaluation_is_replaced_and_its_games_played_again(cluster, tmp_path):
    from ray import cloudpickle

    from deeplops.raypool import connect

    marker = tmp_path / "die"
    shop = load_topology("shop")
    games = [Games(shop, partial(load_policy, "runbook", Role.ORDER), partial(_KillerChaos, marker), episodes=4,
                   seed=seed, game=GameConfig(max_ticks=24), batch=2) for seed in (0, 100)]  # fmt: skip
    here = play_here(games)  # no marker: nothing dies
    marker.touch()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    try:
        with connect(cluster[0], workers=2) as on_ray:
            away = on_ray.play(games)
            assert not marker.exists(), "no actor died"
            assert on_ray.replaced == 1
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert away == here


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_selfplay_on_an_unreachable_cluster_exits_2_naming_the_address(cli, tmp_path):
    address = f"127.0.0.1:{_closed_port()}"
    out = tmp_path / "run"
    result = cli("selfplay", "--ray", address, "--out", str(out))
    assert result.code == 2
    [line] = result.err.strip().splitlines()
    assert line.startswith(f"deeplops: error: --ray {address}: no Ray cluster could be reached there")
    assert not out.exists()


def test_selfplay_on_ray_without_ray_installed_says_how_to_install_it(cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    result = cli("selfplay", "--ray", "auto", "--out", str(tmp_path / "run"))
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        'deeplops: error: --ray needs Ray, an optional extra: pip install "deeplops[ray]"'
    ]


ON_DOCKER = ("selfplay", "--backend", "docker", "--generations", "1", "--steps", "24", "--ticks", "12",
             "--device", "cpu")  # fmt: skip
"""A short fine-tuning of the shipped agents on real containers: one rollout of 12 ticks on each of
two engines per role."""


def _sandboxes_but_the_other_workers() -> set[str]:
    """The sandboxes on this machine's engine, less those of the test run's other pytest-xdist
    workers: a worker's drills may play beside these tests (a sandbox is ``deeplops-PID``)."""
    from deeplops.dockerbox import stack

    me, parent = os.getpid(), os.getppid()
    siblings = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # "PID (COMM) STATE PPID ..."
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == parent and int(stat.parent.name) != me:
            siblings.add(f"deeplops-{stat.parent.name}")
    return set(stack.sandboxes(stack.connect())) - siblings


@pytest.fixture
def fine_tuned(cluster, cli, docker_engine, monkeypatch, tmp_path) -> Callable[[], tuple[Any, set[str]]]:
    """Runs ``ON_DOCKER`` on the cluster into tmp_path/run: its result, and the sandboxes on this
    machine's engine before it."""

    monkeypatch.setattr("deeplops.selfplay.load_agent_config", lambda role, path=None: TINY)

    def run() -> tuple[Any, set[str]]:
        before = _sandboxes_but_the_other_workers()
        return cli(*ON_DOCKER, "--out", str(tmp_path / "run"), "--ray", cluster[0]), before

    return run


@pytest.mark.docker
@pytest.mark.slow
def test_selfplay_on_docker_plays_each_actors_games_on_its_own_nodes_engine(cluster, fine_tuned, tmp_path):

    address, _, engine = cluster
    seen = len(engine.sent)
    result, before = fine_tuned()
    assert result.code == 0, result.err
    assert f"rollouts played by 2 Ray workers on 2 nodes of {address}, the report's games on 2" in result.out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["throughput"]["order_steps"] == 24 and report["throughput"]["chaos_steps"] == 24
    real = report["real"]
    assert real["backend"] == "docker" and real["runbook"]["hypothesis_met"] is True
    assert set(real["learned"]) == {"availability", "mttr_mean", "unrecovered", "hypothesis_met"}
    assert "On real containers (docker)" in (tmp_path / "run" / "report.md").read_text()
    # The second node's actor made its sandboxes through its own DOCKER_HOST: an actor's, not this process's.
    made = set(re.findall(rb"/containers/create\?name=deeplops-(\d+)-", bytes(engine.sent[seen:])))
    assert made and str(os.getpid()).encode() not in made
    assert _sandboxes_but_the_other_workers() == before  # every actor's containers gone


@pytest.mark.docker
@pytest.mark.slow
def test_selfplay_on_docker_with_a_node_without_its_engine_exits_2_naming_the_node(cluster, fine_tuned):

    engine = cluster[2]
    engine.cut()
    try:
        result, before = fine_tuned()
    finally:
        engine.restore()
    assert result.code == 2
    [line] = result.err.strip().splitlines()
    assert re.fullmatch(rf"deeplops: error: on the Ray node at [0-9.]+: Docker engine at 'unix://{engine.path}' "
                        r"not reachable \(\w+\): start dockerd and retry", line), line  # fmt: skip
    assert _sandboxes_but_the_other_workers() == before  # the other node's game was taken down


def test_workers_without_ray_is_refused(cli, tmp_path):
    result = cli("selfplay", "--workers", "2", "--out", str(tmp_path / "run"))
    assert result.code == 2 and "--workers" in result.err and "--ray" in result.err
