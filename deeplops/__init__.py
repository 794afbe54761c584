"""deeplops: a chaos-engineering reinforcement-learning environment for microservice systems.

Importing the package registers ``deeplops/Order-v0`` and ``deeplops/Chaos-v0`` with Gymnasium.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from deeplops.errors import ConfigError, DeeplopsError, PolicyError, SandboxError, ScenarioError
from deeplops.faults import Fault, Repair
from deeplops.version import VERSION

__version__ = VERSION

for _role, _name in (("Order", "Order"), ("Chaos", "Chaos")):
    if f"deeplops/{_name}-v0" not in registry:
        register(
            id=f"deeplops/{_name}-v0",
            entry_point=f"deeplops.gym_env:{_role}Env",
            vector_entry_point=f"deeplops.vector_env:{_role}VectorEnv",
        )


def parallel_env(**kwargs):  # type: ignore[no-untyped-def]
    """The PettingZoo ParallelEnv with agents ``chaos`` and ``order`` (see ``deeplops.parallel``)."""
    from deeplops.parallel import parallel_env as make

    return make(**kwargs)


__all__ = [
    "ConfigError",
    "DeeplopsError",
    "Fault",
    "PolicyError",
    "Repair",
    "SandboxError",
    "ScenarioError",
    "__version__",
    "parallel_env",
]
