"""The policy registry: turns a POLICY argument (a baseline, ``pretrained``, a saved agent) into a policy.

It sits above what it registers (``deeplops.baselines``, ``deeplops.learned``); the Policy
protocol itself lives in ``deeplops.actions``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deeplops import baselines
from deeplops.actions import Policy, Role
from deeplops.errors import PolicyError


def baseline_names(role: Role) -> tuple[str, ...]:
    """Names of the baselines for ``role``, in the order docs/design.md §6 lists them."""
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
    from deeplops.learned import load_agent  # only here: it brings in torch

    agent = load_agent(ref)
    if agent.role is not role:
        raise PolicyError(f"{ref}: a saved {agent.role.value} agent, expected {_a(role)} policy")
    return agent


def _registry() -> dict[Role, dict[str, Callable[[], Policy]]]:
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


_ARTICLE = {Role.ORDER: "an", Role.CHAOS: "a"}


def _a(role: Role) -> str:
    """The role with its article: "an order", "a chaos"."""
    return f"{_ARTICLE[role]} {role.value}"
