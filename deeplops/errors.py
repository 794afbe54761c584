"""The exception tree every deeplops failure a user can cause is raised as.

    DeeplopsError            anything the CLI turns into exit status 2 and one line
     ├── ConfigError         a topology, env or parameter file or value is wrong
     ├── ScenarioError       a scenario or trace is wrong
     ├── PolicyError         a policy name or saved agent cannot be used
     ├── SandboxError        a backend cannot do what was asked
     │    ├── EngineError    the Docker engine failed a call, or could not be reached
     │    └── StackChangedError  a live stack's containers changed under an operation
     │                       (``deeplops.sidecar.live``)
     └── ClusterError        a Ray cluster cannot be used, or its actors keep dying
                             (``deeplops.raypool``)

Messages say what was expected and what was given, on one line. No exception of the Docker
client's libraries (``docker.errors``, ``requests``, ``urllib3``) leaves the Docker backend: it
translates them into ``EngineError`` at its edge (``deeplops.dockerbox.engine``).
"""

from __future__ import annotations


class DeeplopsError(Exception):
    """Root of every error deeplops raises on bad input or an unusable environment."""


class ConfigError(DeeplopsError):
    """A topology, env or parameter file or value is malformed or inconsistent."""


class ScenarioError(DeeplopsError):
    """A scenario or trace file is malformed or names something that does not exist."""


class PolicyError(DeeplopsError):
    """A policy name is unknown, or a file is not a saved agent."""


class SandboxError(DeeplopsError):
    """A sandbox backend is unknown or cannot carry out an operation."""


class EngineError(SandboxError):
    """The Docker engine failed a call or could not be reached (translated from the client's errors)."""

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found
        """Whether the engine answered that the object does not exist (removed meanwhile, say)."""

    def __reduce__(self) -> tuple[type[EngineError], tuple[str, bool]]:
        return type(self), (str(self), self.not_found)
