"""Hyperparameters of the learned agents, one YAML per role under ``agents/``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from deeplops import bounds
from deeplops.actions import Role
from deeplops.catalog import data_dir, read_yaml
from deeplops.errors import ConfigError


@dataclass(frozen=True)
class AgentConfig:
    """How one role's agent is built and trained (masked PPO, deeplops/ppo.py, on the slot network)."""

    learning_rate: float = 3e-4
    """Adam step size."""
    n_steps: int = 64
    """Ticks per env per rollout; a rollout is n_steps × n_games × envs_per_game transitions."""
    batch_size: int = 1024
    """Minibatch size of each gradient step."""
    n_epochs: int = 4
    """Passes over each rollout."""
    gamma: float = 0.9
    """Discount per tick: a repair pays off within a few ticks."""
    gae_lambda: float = 0.9
    """GAE smoothing."""
    ent_coef: float = 0.003
    """Entropy bonus."""
    clip_range: float = 0.2
    """PPO clip."""
    hidden: int = 32
    """Width of each slot's embedding."""
    rounds: int = 2
    """Message-passing rounds over the dependency graph."""
    n_games: int = 8
    """Games played at once, each on its own topology and against its own opponent."""
    envs_per_game: int = 8
    """Copies of each game."""
    imitate: str | None = None
    """A baseline to clone before reinforcement learning (a warm start), or none."""
    imitation_steps: int = 0
    """Transitions of the baseline's play to clone."""
    imitation_epochs: int = 0
    """Passes over them."""
    steps_share: float = 1.0
    """Share of self-play's ``--steps`` this role trains on each generation, in (0, 1]."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "imitate":
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"imitate must be a baseline name or null, got {value!r}")
            elif f.type == "int":
                bounds.whole(value, f"agent setting {f.name}", 0, bounds.MAX_STEPS)
            else:
                bounds.number(value, f"agent setting {f.name}", 0.0, 1e6)
        if not 0.0 < self.steps_share <= 1.0:
            raise ConfigError(f"agent setting steps_share must be in (0, 1], got {self.steps_share!r}")
        if self.n_games < 1 or self.envs_per_game < 1 or self.n_steps < 1 or self.batch_size < 1:
            raise ConfigError("n_games, envs_per_game, n_steps and batch_size must be >= 1")

    @property
    def n_envs(self) -> int:
        """Envs stepped together."""
        return self.n_games * self.envs_per_game


def load_agent_config(role: Role, path: Path | None = None) -> AgentConfig:
    """The role's config: ``path``, or the shipped ``agents/<role>.yaml``."""
    path = path or data_dir("agents") / f"{role.value}.yaml"
    doc = read_yaml(path, ConfigError) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(doc).__name__}")
    known = {f.name for f in fields(AgentConfig)}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {bounds.shown_keys(unknown)}: expected {', '.join(sorted(known))}"
        )
    return AgentConfig(**doc)
