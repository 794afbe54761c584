"""Saved agents as policies: a trained MaskablePPO model acting through the Policy protocol."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from deeplops.errors import PolicyError
from deeplops.game import N_CHAOS_ACTIONS, N_ORDER_ACTIONS
from deeplops.policies import Observation, Role

_ROLE_OF_ACTIONS = {N_ORDER_ACTIONS: Role.ORDER, N_CHAOS_ACTIONS: Role.CHAOS}


class LearnedPolicy:
    """A trained agent: acts greedily (or by sampling) on its network's masked action distribution."""

    privileged = False

    def __init__(self, model: Any, name: str = "learned", deterministic: bool = True) -> None:
        n = int(model.action_space.n)
        if n not in _ROLE_OF_ACTIONS:
            raise PolicyError(f"{name}: expected an agent with {N_ORDER_ACTIONS} or {N_CHAOS_ACTIONS} actions, got {n}")
        self.model = model
        self.role = _ROLE_OF_ACTIONS[n]
        self.name = name
        self.deterministic = deterministic

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """A trained agent keeps no memory between ticks."""

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """The model's action for each env, among the valid ones."""
        keys = self.model.observation_space.spaces
        actions, _ = self.model.predict(
            {k: obs[k] for k in keys}, action_masks=np.array(mask), deterministic=self.deterministic
        )
        return np.asarray(actions, dtype=np.int64).reshape(-1)


def load_agent(path: str | Path, device: str = "cpu") -> LearnedPolicy:
    """The saved agent at ``path`` (a ``.zip`` written by ``deeplops selfplay``)."""
    from sb3_contrib import MaskablePPO

    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{path}: no such file: expected a saved agent (.zip)")
    if not zipfile.is_zipfile(path):
        raise PolicyError(f"{path}: not a saved agent: expected a .zip written by deeplops selfplay")
    try:
        model = MaskablePPO.load(path, device=device)
    except Exception as exc:  # an arbitrary zip: SB3 raises many kinds
        raise PolicyError(f"{path}: not a saved agent ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    return LearnedPolicy(model, name=path.stem)
