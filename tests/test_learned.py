"""Saved agents: written and read as plain JSON and float32 arrays, hostile or malformed files refused
in one line without running anything, and self-play saving, resuming and fine-tuning through them."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error

from deeplops import agentfile
from deeplops.actions import N_ACTIONS, N_CHAOS_ACTIONS, N_ORDER_ACTIONS, OPPONENT, Policy, Role
from deeplops.agent_net import SlotPolicy
from deeplops.agents import AgentConfig
from deeplops.errors import ConfigError, PolicyError
from deeplops.game import Game
from deeplops.learned import load_agent
from deeplops.policies import load_policy
from deeplops.selfplay import SelfPlay, SelfPlayConfig
from deeplops.sim import SimSandbox
from deeplops.topology import load_topology

SMALL = agentfile.Network(hidden=8, rounds=1, value_layers=(16,))


class _Payload:
    """Unpickling this creates ``marker``: what a hostile agent file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def trained(role: Role, seed: int = 0) -> SlotPolicy:
    """A small network with weights of its own and Adam state, as after training."""
    torch.manual_seed(seed)
    policy = agentfile.build_network(role, SMALL)
    with torch.no_grad():
        for param in policy.parameters():
            param.normal_(0.0, 0.5)
    loss = sum((p**2).sum() for p in policy.parameters())
    policy.optimizer.zero_grad()
    loss.backward()
    policy.optimizer.step()
    return policy


def observations(role: Role, n: int = 6, ticks: int = 30) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Observations and masks of ``role`` from real games, with faults under way."""
    seen = []
    for env in ("shop", "bank"):
        game = Game(SimSandbox(load_topology(env), n))
        game.reset(list(range(n)))
        chaos, order = load_policy("random", Role.CHAOS), load_policy("noop", Role.ORDER)
        chaos.reset(n, seed=1)
        order.reset(n, seed=1)
        for _ in range(ticks):
            seen.append((game.observe(role), game.mask(role)))
            game.step(game.decide(chaos), game.decide(order))
    return seen


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[Role, Path]:
    """A saved agent of each role, small."""
    folder = tmp_path_factory.mktemp("agents")
    paths = {}
    for role in Role:
        paths[role] = folder / f"{role.value}.zip"
        agentfile.save(paths[role], trained(role), role, agentfile.TrainingState(timesteps=4096, updates=8))
    return paths


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def write_zip(path: Path, content: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in content.items():
            archive.writestr(name, data)
    return path


def arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def npz(values: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    # numpy's own writer: object arrays go in pickled
    (np.savez_compressed if compressed else np.savez)(buffer, **values)
    return buffer.getvalue()


def test_a_round_trip_keeps_every_weight_the_adam_state_and_every_action(tmp_path):
    for role in Role:
        policy = trained(role)
        path = tmp_path / f"{role.value}.zip"
        agentfile.save(path, policy, role, agentfile.TrainingState(timesteps=123, updates=4))
        back = agentfile.load(path)
        assert back.role is role and back.network == SMALL
        assert back.training == agentfile.TrainingState(timesteps=123, updates=4)
        original = dict(policy.named_parameters())
        rebuilt = back.build()
        for name, param in rebuilt.named_parameters():
            assert torch.equal(param, original[name]), name
        fresh = agentfile.build_network(role, SMALL)
        back.restore(fresh)
        for name, param in fresh.named_parameters():
            state, want = fresh.optimizer.state[param], policy.optimizer.state[original[name]]
            assert float(state["step"]) == float(want["step"]) == 1.0
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(state[moment], want[moment]), (name, moment)
        agent = load_agent(path)
        assert agent.role is role
        agent.deterministic = True  # greedy, as predict below (a chaos agent samples by default)
        for obs, mask in observations(role):
            view = {k: obs[k] for k in policy.observation_space.spaces}
            expected, _ = policy.predict(view, action_masks=np.array(mask), deterministic=True)
            np.testing.assert_array_equal(agent.act(obs, mask), expected)
            # Every action's logit, not only the chosen one: equal to the last bit.
            tensors, _ = policy.obs_to_tensor(view)
            with torch.no_grad():
                logits = policy.get_distribution(tensors).distribution.logits
                assert torch.equal(agent.model.get_distribution(tensors).distribution.logits, logits)


def test_the_same_network_is_saved_as_the_same_bytes(tmp_path):
    policy = trained(Role.ORDER)
    agentfile.save(tmp_path / "a.zip", policy, Role.ORDER)
    agentfile.save(tmp_path / "b.zip", policy, Role.ORDER)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_a_saved_agent_holds_a_plain_config_and_float32_arrays_only(saved):
    content = members(saved[Role.CHAOS])
    assert sorted(content) == ["agent.json", "optimizer.npz", "weights.npz"]
    config = json.loads(content["agent.json"])
    assert config == {
        "format": "deeplops-agent",
        "version": 1,
        "role": "chaos",
        "actions": N_CHAOS_ACTIONS,
        "network": {"hidden": 8, "rounds": 1, "value_layers": [16]},
        "training": {"timesteps": 4096, "updates": 8, "adam_steps": 1},
    }
    weights = arrays(content["weights.npz"])
    assert all(a.dtype == np.float32 for a in weights.values())
    assert set(arrays(content["optimizer.npz"])) == {f"{m}/{k}" for m in ("exp_avg", "exp_avg_sq") for k in weights}


def test_loading_an_agent_never_unpickles(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling on the load path")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for role in Role:
        assert load_policy(str(saved[role]), role).role is role
        assert load_policy("pretrained", role).role is role


def _sb3_zip_with_payload(path: Path, marker: Path) -> Path:
    """stable-baselines3's layout, its ``data`` carrying a cloudpickled-style object that runs a command."""
    blob = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": blob}, "n_envs": 1}
    content = {"data": json.dumps(data).encode(), "policy.pth": b"", "_stable_baselines3_version": b"2.9.2"}
    return write_zip(path, content)


def _npz_with_payload(path: Path, marker: Path, saved: Path) -> Path:
    """Our layout, one of its arrays an object array whose unpickling runs a command."""
    content = members(saved)
    weights: dict[str, np.ndarray] = dict(arrays(content["weights.npz"]))
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    weights["features_extractor.embed.weight"] = evil
    return write_zip(path, {**content, "weights.npz": npz(weights)})


def _torch_checkpoint_with_payload(path: Path, marker: Path) -> Path:
    """A ``torch.save`` file (a zip around a pickle) whose unpickling runs a command."""
    torch.save({"policy": _Payload(marker)}, path)
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path, marker, saved: _sb3_zip_with_payload(path, marker), "old pickled format"),
        (_npz_with_payload, "holds Python objects (pickled): expected float32"),
        (lambda path, marker, saved: _torch_checkpoint_with_payload(path, marker), "not a saved agent"),
    ],
    ids=["sb3-data", "npz-object-array", "torch-save"],
)
def test_a_file_carrying_a_pickle_payload_is_refused_without_running_it(cli, saved, tmp_path, make, says):
    marker = tmp_path / "ran"
    hostile = make(tmp_path / "agent.zip", marker, saved[Role.ORDER])
    assert_one_line_error(cli("evaluate", "--order", str(hostile), "--episodes", "1"), str(hostile), says)
    assert not marker.exists(), "loading the file ran its payload"
    # The payload is live: unpickled, it does run (so the check above can fail).
    pickle.loads(pickle.dumps(_Payload(tmp_path / "control")))
    assert (tmp_path / "control").exists()


def test_an_agent_in_the_old_pickled_format_is_refused_with_what_to_do(cli, tmp_path):
    from sb3_contrib import MaskablePPO

    from deeplops.agent_net import SlotPolicy
    from deeplops.training_env import GameVecEnv

    def chaos(rng: np.random.Generator) -> Policy:
        return load_policy("random", Role.CHAOS)

    env = GameVecEnv(Role.ORDER, lambda rng: load_topology("chain"), chaos, 1, 1)
    old = tmp_path / "order.zip"
    # How agents were written before: stable-baselines3's own (pickling) writer.
    MaskablePPO(SlotPolicy, env, n_steps=8, batch_size=8, policy_kwargs={"hidden": 8, "rounds": 1}).save(old)
    result = cli("evaluate", "--order", str(old), "--episodes", "1")
    assert_one_line_error(result, str(old), "old pickled format", "retrain it with deeplops selfplay")


def _with_config(**changes) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def change(content: dict[str, bytes]) -> dict[str, bytes]:
        config = json.loads(content["agent.json"])
        for dotted, value in changes.items():
            *parents, key = dotted.split(".")
            target = config
            for parent in parents:
                target = target[parent]
            if value is _DROP:
                del target[key]
            else:
                target[key] = value
        return {**content, "agent.json": json.dumps(config).encode()}

    return change


def _with_array(member: str, name: str, value: Callable[[np.ndarray], np.ndarray] | None, compressed: bool = False):
    def change(content: dict[str, bytes]) -> dict[str, bytes]:
        values = arrays(content[member])
        if value is None:
            del values[name]
        else:
            values[name] = value(values.get(name, np.zeros(3, np.float32)))
        return {**content, member: npz(values, compressed)}

    return change


_DROP = object()
HIDDEN = "network.hidden must be an integer from 1 to 128, got"
HOSTILE_TEXT = "EVIL\x1b[31m\nline"
"""Planted where a message might echo the file: it must never appear in one."""
CASES: dict[str, tuple[Callable[[dict[str, bytes]], dict[str, bytes]], str]] = {
    "extra member": (lambda c: {**c, HOSTILE_TEXT: b"x"}, "1 other member(s)"),
    "missing member": (lambda c: {k: v for k, v in c.items() if k != "optimizer.npz"}, "got 2 of them"),
    # 36 MiB of zeros, deflated to some 35 KiB: in the agent's zip, then inside the .npz.
    "oversized member": (lambda c: {**c, "weights.npz": npz({"w": np.zeros(9 * 2**20, np.float32)})},
                         "weights.npz unpacks to 37748"),
    "oversized array": (_with_array("weights.npz", "value_net.bias", lambda a: np.zeros(9 * 2**20, np.float32),
                                    compressed=True), "weights.npz: value_net.bias unpacks to 37748"),
    "oversized config": (lambda c: {**c, "agent.json": b" " * (65 * 2**10)}, "agent.json unpacks to"),
    "json not an object": (lambda c: {**c, "agent.json": b"[1, 2]"}, "agent.json holds an array: expected"),
    "not json": (lambda c: {**c, "agent.json": b"{'role': 1"}, "agent.json is not valid JSON (line 1, column 2)"),
    "not utf-8": (lambda c: {**c, "agent.json": b"\xff\xfe"}, "not UTF-8"),
    "a field twice": (lambda c: {**c, "agent.json": b'{"format": 1, "format": 2}'}, "names a field twice"),
    "nan": (lambda c: {**c, "agent.json": b'{"format": NaN}'}, "NaN or Infinity"),
    "other format": (_with_config(format=HOSTILE_TEXT), "gives format another: expected format 'deeplops-agent'"),
    "no format": (_with_config(format=_DROP), "gives format none"),
    "newer version": (_with_config(version=2), "format version 2: expected version 1"),
    "version as text": (_with_config(version="1"), "version must be an integer from 1"),
    "extra field": (_with_config(comment=HOSTILE_TEXT), "1 field(s) beside"),
    "missing field": (_with_config(training=_DROP), "lacks the field training"),
    "other role": (_with_config(role=HOSTILE_TEXT), "role must be 'order' or 'chaos', got another string"),
    # An order agent's action count is also a round-1 chaos agent's: read as one, its shapes do not fit.
    "role of other actions": (_with_config(role="chaos"), "embed.weight has shape (8, 21): expected"),
    "actions of no world": (_with_config(actions=70), f"role order with 70 actions: expected {N_ORDER_ACTIONS}"),
    "hidden as text": (_with_config(**{"network.hidden": "8"}), f"{HIDDEN} a string"),
    "hidden huge": (_with_config(**{"network.hidden": 10**6}), f"{HIDDEN} 1000000"),
    "hidden a bool": (_with_config(**{"network.hidden": True}), f"{HIDDEN} a boolean"),
    "value layers not a list": (_with_config(**{"network.value_layers": 16}), "network.value_layers must be an array"),
    "negative timesteps": (_with_config(**{"training.timesteps": -1}), "training.timesteps must be an integer from 0"),
    "network of other settings": (_with_config(**{"network.hidden": 16}), "has shape (8, 21): expected (16, 21)"),
    "wrong shape": (_with_array("weights.npz", "value_net.bias", lambda a: np.zeros((1, 1), np.float32)),
                    "value_net.bias has shape (1, 1): expected (1,)"),
    "wrong dtype": (_with_array("weights.npz", "value_net.bias", lambda a: a.astype(np.float64)),
                    "value_net.bias has dtype float64: expected float32"),
    "big-endian": (_with_array("weights.npz", "value_net.bias", lambda a: a.astype(">f4")), "float32 big-endian"),
    "structured dtype": (_with_array("weights.npz", "value_net.bias", lambda a: np.zeros(1, [(HOSTILE_TEXT, "<f4")])),
                         "has dtype a structured dtype"),
    "missing array": (_with_array("weights.npz", "value_net.bias", None), "weights.npz lacks the array value_net.bias"),
    "extra array": (_with_array("weights.npz", HOSTILE_TEXT, lambda a: a), "holds 1 array(s) too many"),
    "non-finite weight": (_with_array("weights.npz", "value_net.bias", lambda a: np.full_like(a, np.nan)),
                          "value_net.bias holds NaN or infinite values"),
    "moments without steps": (_with_config(**{"training.adam_steps": 0}), "array(s) too many: expected no arrays"),
    "steps without moments": (lambda c: {**c, "optimizer.npz": npz({})}, "optimizer.npz lacks the array exp_avg/"),
    "negative squared mean": (_with_array("optimizer.npz", "exp_avg_sq/value_net.bias", lambda a: a - 1.0),
                              "exp_avg_sq/value_net.bias holds negative values"),
    "weights not an npz": (lambda c: {**c, "weights.npz": b"not a zip"}, "weights.npz cannot be read as an .npz"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_malformed_agent_file_is_refused_in_one_line_naming_the_problem(saved, tmp_path, case):
    change, says = CASES[case]
    path = write_zip(tmp_path / "agent.zip", change(members(saved[Role.ORDER])))
    with pytest.raises(PolicyError) as refused:
        load_policy(str(path), Role.ORDER)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and says in message, message
    assert "\n" not in message and "EVIL" not in message and "\x1b" not in message


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"hello", "got a file that is no zip"), (b"PK\x03\x04" + b"\x00" * 40, "got a file that is no zip")],
    ids=["text", "truncated zip"],
)
def test_a_file_that_is_no_zip_is_refused_through_the_cli(cli, tmp_path, content, says):
    path = tmp_path / "order.zip"
    path.write_bytes(content)
    result = cli("evaluate", "--order", str(path), "--episodes", "1")
    assert_one_line_error(result, str(path), "not a saved agent", says)


def test_a_zip_of_too_many_entries_or_bytes_is_refused_before_it_is_read(saved, tmp_path, monkeypatch):
    many = write_zip(tmp_path / "many.zip", {f"member-{i}": b"" for i in range(2000)})
    with pytest.raises(PolicyError, match=r"a zip directory of \d+ bytes: expected at most 65536"):
        agentfile.load(many)
    monkeypatch.setattr(agentfile, "MAX_FILE_BYTES", 1000)
    with pytest.raises(PolicyError, match=r"\d+ bytes: expected a saved agent of at most 1000 bytes"):
        agentfile.load(saved[Role.ORDER])


def test_a_folder_is_refused_as_no_saved_agent(cli, tmp_path):
    result = cli("evaluate", "--order", str(tmp_path), "--episodes", "1")
    assert_one_line_error(result, str(tmp_path), "not a regular file: expected a saved agent")


def test_selfplay_refuses_a_network_too_large_to_save_before_training():
    huge = AgentConfig(**{**TINY.__dict__, "hidden": 256})
    with pytest.raises(ConfigError, match="order agent: hidden 256 \\(expected 1 to 128\\)"):
        SelfPlayConfig(order=huge, chaos=TINY, device="cpu")


def test_a_saved_agent_of_the_other_role_is_refused(saved):
    with pytest.raises(PolicyError, match="a saved chaos agent, expected an order policy"):
        load_policy(str(saved[Role.CHAOS]), Role.ORDER)


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_the_shipped_agents_are_saved_agents_of_their_role(role):
    from deeplops.catalog import data_dir

    path = data_dir("agents") / "pretrained" / f"{role.value}.zip"
    assert sorted(members(path)) == ["agent.json", "optimizer.npz", "weights.npz"]
    shipped = agentfile.load(path)
    assert shipped.role is role
    assert shipped.network == agentfile.Network(hidden=32, rounds=2, value_layers=(64,))
    assert shipped.adam.steps > 0 and shipped.training.timesteps > 0
    agent = load_policy("pretrained", role)
    assert agent.role is role
    assert agent.model.action_space.n == N_ACTIONS[role]


# Self-play through the format, at a tiny size.
TINY = AgentConfig(n_steps=32, batch_size=64, n_epochs=1, hidden=8, rounds=1, n_games=2, envs_per_game=4)
STEPS = 512
"""Transitions per role per generation: 2 rollouts of 32 ticks × 8 envs; each rollout is 4
minibatches of 64 and one epoch, so 8 Adam steps a generation."""


def tiny(generations: int, **kwargs) -> SelfPlayConfig:
    return SelfPlayConfig(generations=generations, steps=STEPS, seed=0, device="cpu", order=TINY, chaos=TINY, **kwargs)


@pytest.fixture(scope="module")
def two_generations(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("selfplay")
    SelfPlay(tiny(2), out).run()
    return out


@pytest.mark.slow
def test_selfplay_checkpoints_carry_the_training_state_from_generation_to_generation(two_generations):
    checkpoints = two_generations / "checkpoints"
    for role in Role:
        first, second = (agentfile.load(checkpoints / f"{role.value}-g{g}.zip") for g in (1, 2))
        assert first.role is second.role is role
        assert (first.training.timesteps, second.training.timesteps) == (STEPS, 2 * STEPS)
        # Adam's steps go on from the first generation's: its state was carried over, not restarted.
        assert (first.adam.steps, second.adam.steps) == (8, 16)
        assert any(not np.array_equal(first.weights[k], second.weights[k]) for k in first.weights)


@pytest.mark.slow
def test_selfplay_resumes_from_its_checkpoints(two_generations):
    resumed = SelfPlay(tiny(3), two_generations)
    assert resumed.completed() == 2
    resumed.run()
    third = agentfile.load(two_generations / "checkpoints" / "order-g3.zip")
    assert third.training.timesteps == 3 * STEPS and third.adam.steps == 24


@pytest.mark.slow
def test_selfplay_fine_tunes_the_agents_of_another_run(two_generations, tmp_path):
    start = tmp_path / "start"
    start.mkdir()
    for role in Role:
        checkpoint = two_generations / "checkpoints" / f"{role.value}-g2.zip"
        (start / f"{role.value}.zip").write_bytes(checkpoint.read_bytes())
    # The run asks for a wider network; fine-tuning keeps the one it starts from.
    wider = AgentConfig(**{**TINY.__dict__, "hidden": 16})
    config = SelfPlayConfig(generations=1, steps=STEPS, seed=1, device="cpu", order=wider, chaos=wider,
                            start_from=str(start))  # fmt: skip
    SelfPlay(config, tmp_path / "tuned").run()
    for role in Role:
        before = agentfile.load(start / f"{role.value}.zip")
        after = agentfile.load(tmp_path / "tuned" / "checkpoints" / f"{role.value}-g1.zip")
        assert after.network == before.network == agentfile.Network(8, 1, (64,))
        assert after.adam.steps == before.adam.steps + 8
        assert any(not np.array_equal(before.weights[k], after.weights[k]) for k in before.weights)


def test_selfplay_from_a_directory_of_the_wrong_agents_is_a_one_line_error(cli, saved, tmp_path):
    for role in Role:  # each file is the other role's agent
        other = OPPONENT[role]
        (tmp_path / f"{role.value}.zip").write_bytes(saved[other].read_bytes())
    result = cli("selfplay", "--from", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "order.zip", "holds the chaos agent: expected the order agent")


def test_selfplay_from_old_pickled_agents_is_a_one_line_error(cli, tmp_path):
    for role in Role:
        _sb3_zip_with_payload(tmp_path / f"{role.value}.zip", tmp_path / "ran")
    result = cli("selfplay", "--from", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "order.zip", "old pickled format")
    assert not (tmp_path / "ran").exists()


# --- how a saved agent acts ---------------------------------------------------------------------


def chaos_moves(seed: int, ticks: int = 30) -> np.ndarray:
    """The shipped chaos agent's moves over ``ticks`` ticks of 8 envs, its samples seeded by ``seed``."""
    chaos, order = load_policy("pretrained", Role.CHAOS), load_policy("noop", Role.ORDER)
    game = Game(SimSandbox(load_topology("shop"), 8))
    game.reset(list(range(8)))
    chaos.reset(8, seed=seed)
    moves = []
    for _ in range(ticks):
        mask = game.chaos_mask().copy()
        acts = game.decide(chaos)
        assert mask[np.arange(8), acts].all()  # sampled, yet always allowed
        moves.append(acts)
        game.step(acts, game.decide(order))
    return np.array(moves)


def test_a_chaos_agent_samples_its_moves_reproducibly_from_its_seed():
    first = chaos_moves(seed=3)
    np.testing.assert_array_equal(first, chaos_moves(seed=3))
    assert not np.array_equal(first, chaos_moves(seed=4))
    assert len({tuple(col) for col in first.T}) > 1  # envs in one state still play differently


def test_an_order_agent_acts_greedily():
    agent = load_policy("pretrained", Role.ORDER)
    game = Game(SimSandbox(load_topology("shop"), 4))
    game.reset([0] * 4)  # four copies of one state
    agent.reset(4, seed=0)
    actions = game.decide(agent)
    assert (actions == actions[0]).all()
