"""Saved agents as policies: a trained slot network acting through the Policy protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deeplops import agentfile
from deeplops.actions import N_ACTIONS, Observation, Role
from deeplops.agent_net import SlotPolicy
from deeplops.errors import PolicyError

_ROLE_OF_ACTIONS = {n: role for role, n in N_ACTIONS.items()}
"""A network's role, known by its action count (the roles' counts differ)."""


class LearnedPolicy:
    """A trained agent: acts on its network's masked action distribution, greedily (an order agent,
    by default) or by sampling from it (a chaos agent: an adversary that always makes the same move
    is one counter-move from beaten, and self-play needs opponents that keep probing). Samples come
    from a stream seeded at ``reset``: the same seed, the same moves."""

    privileged = False

    def __init__(self, model: SlotPolicy, name: str = "learned", deterministic: bool | None = None) -> None:
        n = int(model.action_space.n)  # type: ignore[attr-defined]  # a Discrete space: the game's actions
        if n not in _ROLE_OF_ACTIONS:
            counts = " or ".join(str(count) for count in N_ACTIONS.values())
            raise PolicyError(f"{name}: expected an agent with {counts} actions, got {n}")
        self.model = model
        self.role = _ROLE_OF_ACTIONS[n]
        self.name = name
        self.deterministic = self.role is Role.ORDER if deterministic is None else deterministic
        self._rng = np.random.default_rng(0)

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """A trained agent keeps no memory between ticks; its samples restart from ``seed``."""
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """The network's action for each env, among the valid ones."""
        keys = self.model.observation_space.spaces  # type: ignore[attr-defined]  # a Dict space
        given = {k: obs[k] for k in keys}
        if self.deterministic:
            actions, _ = self.model.predict(given, action_masks=np.array(mask), deterministic=True)
            return np.asarray(actions, dtype=np.int64).reshape(-1)
        with torch.no_grad():
            tensors, _ = self.model.obs_to_tensor(given)
            dist = self.model.get_distribution(tensors, action_masks=np.array(mask))
            probs = dist.distribution.probs.cpu().numpy()  # type: ignore[union-attr]
        # One uniform per env against the cumulative odds: masked actions have odds 0, never drawn.
        drawn = (probs.cumsum(axis=1) < self._rng.random((len(probs), 1))).sum(axis=1)
        return np.minimum(drawn, probs.shape[1] - 1).astype(np.int64)


def load_agent(path: str | Path, device: str = "cpu") -> LearnedPolicy:
    """The saved agent at ``path`` (a ``.zip`` written by ``deeplops selfplay``; see ``deeplops.agentfile``).

    Raises:
        PolicyError: the file is not a saved agent in deeplops's format (an old pickled one included).
    """
    path = Path(path)
    return LearnedPolicy(agentfile.load(path).build(device), name=path.stem)
