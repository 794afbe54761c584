"""Saved agents as policies: a trained slot network acting through the Policy protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deeplops import agentfile
from deeplops.actions import N_ACTIONS, Observation
from deeplops.agent_net import SlotPolicy
from deeplops.errors import PolicyError

_ROLE_OF_ACTIONS = {n: role for role, n in N_ACTIONS.items()}
"""A network's role, known by its action count (the roles' counts differ)."""


class LearnedPolicy:
    """A trained agent: acts greedily (or by sampling) on its network's masked action distribution."""

    privileged = False

    def __init__(self, model: SlotPolicy, name: str = "learned", deterministic: bool = True) -> None:
        n = int(model.action_space.n)  # type: ignore[attr-defined]  # a Discrete space: the game's actions
        if n not in _ROLE_OF_ACTIONS:
            counts = " or ".join(str(count) for count in N_ACTIONS.values())
            raise PolicyError(f"{name}: expected an agent with {counts} actions, got {n}")
        self.model = model
        self.role = _ROLE_OF_ACTIONS[n]
        self.name = name
        self.deterministic = deterministic

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """A trained agent keeps no memory between ticks."""

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """The network's action for each env, among the valid ones."""
        keys = self.model.observation_space.spaces  # type: ignore[attr-defined]  # a Dict space
        actions, _ = self.model.predict(
            {k: obs[k] for k in keys}, action_masks=np.array(mask), deterministic=self.deterministic
        )
        return np.asarray(actions, dtype=np.int64).reshape(-1)


def load_agent(path: str | Path, device: str = "cpu") -> LearnedPolicy:
    """The saved agent at ``path`` (a ``.zip`` written by ``deeplops selfplay``; see ``deeplops.agentfile``).

    Raises:
        PolicyError: the file is not a saved agent in deeplops's format (an old pickled one included).
    """
    path = Path(path)
    return LearnedPolicy(agentfile.load(path).build(device), name=path.stem)
