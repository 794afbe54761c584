"""Specification of loading agents saved in an earlier world (docs/design.md: saved agents): their
weights carry over, the new features change nothing they do, and they never take a new action."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplops import agentfile
from deeplops.actions import FAULTS_PER_SLOT, N_ACTIONS, REPAIRS_PER_SLOT, Role
from deeplops.agent_net import SlotPolicy
from deeplops.agentupgrade import EMBED, SLOT_BIAS, SLOT_WEIGHT
from deeplops.faults import Fault
from deeplops.game import Game
from deeplops.observation import MAX_SLOTS, Feature
from deeplops.sim import SimSandbox
from deeplops.topology import load_topology

SHIPPED = {role: Path(__file__).parent / "data" / "round1" / f"{role.value}.zip" for role in Role}
"""The agents shipped before releases existed, as they were saved in the round-1 world (12
features, 4 repairs, 5 faults; ``agents/pretrained`` at commit f6f94ba)."""
ROUND_1 = {Role.ORDER: 4, Role.CHAOS: 5}


def raw_weights(path: Path) -> dict[str, np.ndarray]:
    """The file's arrays as numpy reads them, without deeplops."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read("weights.npz")
    with np.load(io.BytesIO(data)) as npz:
        return {name: npz[name] for name in npz.files}


def saved_actions(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        return int(json.loads(archive.read("agent.json"))["actions"])


@pytest.mark.parametrize("role", list(Role))
def test_the_agents_shipped_before_releases_were_saved_in_the_round_1_world(role: Role) -> None:
    assert saved_actions(SHIPPED[role]) == 1 + MAX_SLOTS * ROUND_1[role] != N_ACTIONS[role]


@pytest.mark.parametrize("role", list(Role))
def test_an_earlier_agent_keeps_every_weight_it_had(role: Role) -> None:
    raw = raw_weights(SHIPPED[role])
    agent = agentfile.load(SHIPPED[role])
    for name, array in raw.items():
        got = agent.weights[name]
        if name == EMBED:  # 12 features, then the derived inputs; three new features between
            assert np.array_equal(got[:, :12], array[:, :12])
            assert np.array_equal(got[:, 15:], array[:, 12:])
            assert (got[:, 12:15] == 0).all()
        elif name in (SLOT_WEIGHT, SLOT_BIAS):
            assert np.array_equal(got[: ROUND_1[role]], array)
        else:
            assert np.array_equal(got, array)


def logits(policy: SlotPolicy, obs: dict[str, np.ndarray]) -> np.ndarray:
    tensors = {k: torch.as_tensor(v) for k, v in obs.items()}
    with torch.no_grad():
        return policy.get_distribution(tensors).distribution.logits.numpy()


def store_observation(role: Role) -> dict[str, np.ndarray]:
    game = Game(SimSandbox(load_topology("store"), 1))
    game.reset([0])
    game.step(np.zeros(1, np.int64), np.zeros(1, np.int64))
    return {k: np.asarray(v).copy() for k, v in game.observe(role).items()}


@pytest.mark.parametrize("role", list(Role))
def test_the_new_features_change_nothing_an_earlier_agent_does(role: Role) -> None:
    policy = agentfile.load(SHIPPED[role]).build()
    obs = store_observation(role)
    before = logits(policy, obs)
    new = [Feature.MEMORY, Feature.CONNECTIONS, Feature.SINCE_DEPLOY]
    obs["services"][..., new] = np.random.default_rng(0).random(obs["services"][..., new].shape)
    assert np.allclose(logits(policy, obs), before, atol=1e-6)


def test_an_earlier_order_agent_never_rolls_back() -> None:
    policy = agentfile.load(SHIPPED[Role.ORDER]).build()
    out = logits(policy, store_observation(Role.ORDER))[0]
    per_slot = out[1:].reshape(MAX_SLOTS, REPAIRS_PER_SLOT)
    assert (per_slot[:, -1] <= out.max() - 15).all()


def test_an_earlier_agent_saved_again_is_saved_in_this_world(tmp_path: Path) -> None:
    agent = agentfile.load(SHIPPED[Role.ORDER])
    policy = agent.build()
    agent.restore(policy)  # its Adam moments fit today's network, to fine-tune on
    agentfile.save(tmp_path / "again.zip", policy, Role.ORDER, agent.training)
    assert saved_actions(tmp_path / "again.zip") == N_ACTIONS[Role.ORDER]
    again = agentfile.load(tmp_path / "again.zip")
    assert all(np.array_equal(again.weights[k], v) for k, v in agent.weights.items())


def test_an_earlier_agent_to_train_on_tries_the_new_actions_as_a_quieter_first_action() -> None:
    raw = raw_weights(SHIPPED[Role.ORDER])
    agent = agentfile.load(SHIPPED[Role.ORDER], explore=True)
    weight, bias = agent.weights[SLOT_WEIGHT], agent.weights[SLOT_BIAS]
    assert np.array_equal(weight[4], raw[SLOT_WEIGHT][0])  # rollback starts as restart...
    assert bias[4] == pytest.approx(raw[SLOT_BIAS][0] - 2.0)  # ...tried e^-2 as often
    policy = agent.build()
    out = logits(policy, store_observation(Role.ORDER))[0][1:].reshape(MAX_SLOTS, REPAIRS_PER_SLOT)
    assert np.allclose(out[:, 4], out[:, 0] - 2.0, atol=1e-5)


RELEASES_CHAOS = Path(__file__).parent / "data" / "releases" / "chaos.zip"
"""The chaos agent shipped with bad deploys, before memory leaks (six faults a slot;
``agents/pretrained`` at commit f599dd4)."""
LEAKS_CHAOS = Path(__file__).parent / "data" / "leaks" / "chaos.zip"
"""The chaos agent shipped with memory leaks, before connection leaks (seven faults a slot;
``agents/pretrained`` at commit f96a651)."""


@pytest.mark.parametrize(
    ("path", "faults", "never"),
    [(RELEASES_CHAOS, 6, Fault.MEMORY_LEAK), (LEAKS_CHAOS, 7, Fault.CONN_LEAK)],
    ids=["releases", "memory-leaks"],
)
def test_a_chaos_agent_of_an_earlier_world_keeps_its_faults_and_never_takes_the_new_ones(
    path: Path, faults: int, never: Fault
) -> None:
    assert saved_actions(path) == 1 + MAX_SLOTS * faults
    raw = raw_weights(path)
    agent = agentfile.load(path)
    assert np.array_equal(agent.weights[SLOT_WEIGHT][:faults], raw[SLOT_WEIGHT])
    assert np.array_equal(agent.weights[SLOT_BIAS][:faults], raw[SLOT_BIAS])
    assert np.array_equal(agent.weights[EMBED], raw[EMBED])  # the same features: nothing new to read
    out = logits(agent.build(), store_observation(Role.CHAOS))[0]
    per_slot = out[1:].reshape(MAX_SLOTS, FAULTS_PER_SLOT)
    assert (per_slot[:, never - 1 :] <= out.max() - 15).all()


def test_a_chaos_agent_to_train_on_tries_a_new_fault_as_a_quieter_copy_of_its_likeliest_one() -> None:
    # The chaos agent of the memory-leak world has settled on pauses (the largest bias of its
    # slot head); a copy of its kill, which it dropped, would never be tried.
    raw = raw_weights(LEAKS_CHAOS)
    assert int(np.argmax(raw[SLOT_BIAS])) == Fault.PAUSE - 1
    agent = agentfile.load(LEAKS_CHAOS, explore=True)
    weight, bias = agent.weights[SLOT_WEIGHT], agent.weights[SLOT_BIAS]
    assert np.array_equal(weight[Fault.CONN_LEAK - 1], raw[SLOT_WEIGHT][Fault.PAUSE - 1])
    assert bias[Fault.CONN_LEAK - 1] == pytest.approx(raw[SLOT_BIAS][Fault.PAUSE - 1] - 2.0)


def test_an_order_agent_of_the_releases_world_is_todays_and_loads_unchanged() -> None:
    path = Path(__file__).parent.parent / "agents" / "pretrained" / "order.zip"
    assert saved_actions(path) == N_ACTIONS[Role.ORDER]
    raw = raw_weights(path)
    agent = agentfile.load(path)
    assert all(np.array_equal(agent.weights[k], v) for k, v in raw.items())
