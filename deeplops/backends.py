"""The sandbox backends by name, and the factory that makes one.

Each backend is imported only when one is made: the command line lists the names without paying
for the simulator's compiled kernels or the Docker client.
"""

from __future__ import annotations

from collections.abc import Callable

from deeplops import bounds
from deeplops.errors import ConfigError, SandboxError
from deeplops.sandbox import Sandbox
from deeplops.topology import Topology

BACKENDS = ("sim", "docker")
"""Names of the backends, the default first."""


def make_sandbox(backend: str, topology: Topology, n_envs: int = 1, **options: object) -> Sandbox:
    """Create a sandbox of ``backend`` for ``topology`` with ``n_envs`` copies.

    Options: ``params`` (a ``SimParams``) for the simulator, ``name`` (the sandbox's name) for
    Docker. An unknown backend or option is a SandboxError; a ``params`` that is not a
    ``SimParams`` is a ConfigError.
    """
    factories: dict[str, Callable[[], Sandbox]] = {
        "sim": lambda: _sim(topology, n_envs, options),
        "docker": lambda: _docker(topology, n_envs, options),
    }
    if backend not in factories:
        raise SandboxError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return factories[backend]()


def _docker(topology: Topology, n_envs: int, options: dict[str, object]) -> Sandbox:
    from deeplops.dockerbox.sandbox import DockerSandbox

    name = options.pop("name", None)
    if options:
        raise SandboxError(f"unknown docker option(s) {sorted(options)}: expected name")
    return DockerSandbox(topology, n_envs=n_envs, name=None if name is None else str(name))


def _sim(topology: Topology, n_envs: int, options: dict[str, object]) -> Sandbox:
    from deeplops.sim import SimParams, SimSandbox

    params = options.pop("params", None) or SimParams()
    if options:
        raise SandboxError(f"unknown sim option(s) {sorted(options)}: expected params")
    if not isinstance(params, SimParams):
        raise ConfigError(f"sim option params: expected a SimParams, got {bounds.shown(params)}")
    return SimSandbox(topology, n_envs=n_envs, params=params)
