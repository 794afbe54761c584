"""The Policy protocol and the registry that turns a POLICY argument into a policy object.

A policy acts for a whole batch at once: ``act(obs, mask)`` takes the batched observation
dict of its role and a ``(n_envs, n_actions)`` bool mask, and returns ``(n_envs,)`` actions.
Baselines, learned agents, frozen opponents and the sidecar all plug in through it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np

from deeplops.errors import PolicyError

Observation = dict[str, np.ndarray]


class Role(str, Enum):
    """Which side of the game a policy plays."""

    ORDER = "order"
    CHAOS = "chaos"


class Policy(Protocol):
    """Chooses one action per env, for a batch of envs."""

    name: str
    """Short name for reports, e.g. ``runbook``."""
    role: Role
    """The side it plays."""
    privileged: bool
    """If true, ``obs`` also carries ``faults``: ``(n_envs, MAX_SLOTS)`` true fault codes."""

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Forget the last episode and prepare for ``n_envs`` new ones."""
        ...

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """``(n_envs,)`` int64 actions for a batched observation and action mask."""
        ...


def baseline_names(role: Role) -> tuple[str, ...]:
    """Names of the baselines for ``role``, in the order DESIGN §7 lists them."""
    return tuple(_registry()[role])


PRETRAINED = "pretrained"
"""The policy name of the shipped trained agent of a role (``agents/pretrained/ROLE.zip``)."""


def load_policy(ref: str, role: Role | str) -> Policy:
    """The policy named ``ref``: a baseline name for ``role``, or the path of a saved agent."""
    role = Role(role)
    factories = _registry()[role]
    if ref in factories:
        return factories[ref]()
    names = ", ".join([*factories, PRETRAINED])
    if ref == PRETRAINED:  # the shipped agent, wherever the package is installed (a sidecar image too)
        from deeplops.catalog import data_dir

        ref = str(data_dir("agents") / "pretrained" / f"{role.value}.zip")
    if not Path(ref).exists():
        raise PolicyError(f"unknown {role.value} policy {ref!r}: expected one of {names}, or the path of a saved agent")
    from deeplops.learned import load_agent

    agent = load_agent(ref)
    if agent.role is not role:
        raise PolicyError(f"{ref}: a saved {agent.role.value} agent, expected {_a(role)} policy")
    return agent


def _registry() -> dict[Role, dict[str, Callable[[], Policy]]]:
    from deeplops import baselines

    return {
        Role.ORDER: {
            "noop": lambda: baselines.NoopPolicy(Role.ORDER),
            "random": baselines.RandomOrder,
            "autoheal": baselines.AutohealPolicy,
            "k8s": baselines.KubernetesPolicy,
            "runbook": baselines.RunbookPolicy,
            "oracle": baselines.OraclePolicy,
        },
        Role.CHAOS: {
            "noop": lambda: baselines.NoopPolicy(Role.CHAOS),
            "random": baselines.RandomChaos,
            "flapping": baselines.FlappingChaos,
        },
    }


def as_policy(ref: Policy | str | None, role: Role, default: str) -> Policy:
    """A policy object from an object, a POLICY string, or ``None`` (``default``); checks the role."""
    policy = load_policy(default if ref is None else ref, role) if ref is None or isinstance(ref, str) else ref
    if Role(policy.role) is not role:
        raise PolicyError(f"expected {_a(role)} policy, got {_a(Role(policy.role))} policy {policy.name!r}")
    return policy


def _a(role: Role) -> str:
    """The role with its article: "an order", "a chaos"."""
    return f"{'an' if role is Role.ORDER else 'a'} {role.value}"
