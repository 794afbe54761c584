"""Saved agents of an earlier world, brought into this one without changing what they do.

The world grows at the ends of its tables (docs/design.md §4.2–4.3): observation features are
appended, and so are fault and repair codes, which the action layout places per slot. An agent
saved before a growth has a narrower first layer and fewer actions per slot. Its weights carry
over exactly: the new features get zero weights (it goes on reading what it read), and each new
action a zero weight and a logit bias far below every other (it never picks what it never
learned). An agent to train on instead starts each new action as a quieter copy of the slot's
first action, so that training tries it (``explore``). Reading is by shape, so nothing in the file is
trusted beyond what ``agentfile`` already checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from deeplops.actions import FAULTS_PER_SLOT, REPAIRS_PER_SLOT, Role
from deeplops.observation import MAX_SLOTS, N_FEATURES

EMBED = "features_extractor.embed.weight"
"""The first layer: its columns are the per-slot inputs, the observation's features first."""
SLOT_WEIGHT, SLOT_BIAS = "action_net.slot.weight", "action_net.slot.bias"
"""The per-slot action head: one row per action a slot offers."""
NEVER_LOGIT = -20.0
"""Logit bias of an action an earlier agent did not have: e^-20 of the odds of any it knows."""
EXPLORE_GAP = 2.0
"""To train on, a new action starts as a copy of an action the agent knows (``explore_from``) this
much lower in logit: tried about e^-2 as often, then told apart from it by what training rewards."""


@dataclass(frozen=True)
class World:
    """The layout an earlier world gave a slot: its observation features and actions."""

    features: int
    """Observation features per slot."""
    per_slot: dict[Role, int]
    """Actions per slot of each role."""

    def actions(self, role: Role) -> int:
        """The role's action count: noop and the per-slot actions of every slot."""
        return 1 + MAX_SLOTS * self.per_slot[role]


ROUND_1 = World(features=12, per_slot={Role.ORDER: 4, Role.CHAOS: 5})
"""Five faults, four repairs, twelve features: the agents trained before bad deploys."""
RELEASES = World(features=15, per_slot={Role.ORDER: 5, Role.CHAOS: 6})
"""Six faults, five repairs, fifteen features: the agents trained with bad deploys, before memory
leaks (whose order agents are today's: nothing they read or do has changed)."""
LEAKS = World(features=15, per_slot={Role.ORDER: 5, Role.CHAOS: 7})
"""Seven faults: the agents trained with memory leaks, before connection leaks (whose order agents
are today's: nothing they read or do has changed)."""
EARLIER: tuple[World, ...] = (ROUND_1, RELEASES, LEAKS)
"""Every earlier world whose agents load here."""
NOW = World(features=N_FEATURES, per_slot={Role.ORDER: REPAIRS_PER_SLOT, Role.CHAOS: FAULTS_PER_SLOT})


def world_of(role: Role, actions: int) -> World | None:
    """The earlier world whose ``role`` agents have ``actions`` actions; None if none has, or if
    today's have as many (an agent of a world that changed nothing of its role is today's)."""
    if actions == NOW.actions(role):
        return None
    return next((w for w in EARLIER if w.actions(role) == actions), None)


def shapes_in(world: World, role: Role, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The parameter shapes a network of today's ``shapes`` had in ``world``."""
    old = dict(shapes)
    rows, cols = old[EMBED]
    old[EMBED] = (rows, cols - NOW.features + world.features)
    hidden = old[SLOT_WEIGHT][1]
    old[SLOT_WEIGHT] = (world.per_slot[role], hidden)
    old[SLOT_BIAS] = (world.per_slot[role],)
    return old


def explore_from(role: Role, bias: np.ndarray) -> int:
    """The action a new one starts as a copy of, to train on: an order agent's restart (a new
    repair is, like it, something done to a service), a chaos agent's likeliest fault (largest
    bias). A chaos agent settles on few faults; a copy of one it stopped using (its kill, say)
    would never be tried, however much the new fault would hurt its opponent."""
    return 0 if role is Role.ORDER else int(np.argmax(bias))


def upgrade(
    world: World, role: Role, arrays: Mapping[str, np.ndarray], moments: bool = False, explore: bool = False
) -> dict[str, np.ndarray]:
    """``arrays`` (weights, or Adam's moments when ``moments``) of a ``world`` network in today's
    shapes: zeros for the new inputs, and for the new actions zero weights and a ``NEVER_LOGIT``
    bias, or with ``explore`` the weights of the action ``explore_from`` picks and its bias less
    ``EXPLORE_GAP`` (the moments of new actions are 0)."""
    out = dict(arrays)
    embed = arrays[EMBED]
    grown = world.features
    new_inputs = NOW.features - world.features
    zeros = np.zeros((embed.shape[0], new_inputs), embed.dtype)
    out[EMBED] = np.concatenate([embed[:, :grown], zeros, embed[:, grown:]], axis=1)
    added = NOW.per_slot[role] - world.per_slot[role]
    weight, bias = arrays[SLOT_WEIGHT], arrays[SLOT_BIAS]
    if explore and not moments:
        source = explore_from(role, bias)
        new_weight = np.repeat(weight[source : source + 1], added, axis=0)
        new_bias = np.full(added, bias[source] - EXPLORE_GAP, bias.dtype)
    else:
        new_weight = np.zeros((added, weight.shape[1]), weight.dtype)
        new_bias = np.full(added, 0.0 if moments else NEVER_LOGIT, bias.dtype)
    out[SLOT_WEIGHT] = np.concatenate([weight, new_weight])
    out[SLOT_BIAS] = np.concatenate([bias, new_bias])
    return out
