"""The Docker backend's edge with the engine: every failure of the client's libraries becomes an EngineError.

The Docker client raises its own exceptions (``docker.errors``), those of the HTTP library under
it (``requests``, ``urllib3``) when the engine cannot be reached or stops answering, and both
kinds for a container removed by someone else meanwhile. Each public entry of the backend (the
sandbox's operations, bringing stacks up and down, building images, the sidecar's live stacks) is
wrapped in ``engine_errors`` or ``@edge``, so callers above catch one type: ``SandboxError``,
whose ``EngineError`` says what the engine did. Inside the edge, code may still catch the client's
own exceptions where it handles one (a container already gone, a network still in use).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import requests.exceptions
import urllib3.exceptions
from docker.errors import APIError, BuildError, DockerException, NotFound

from deeplops.errors import EngineError

ENGINE_ERRORS: tuple[type[Exception], ...] = (
    DockerException,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
)
"""What the Docker client's libraries raise; none of it leaves the backend untranslated."""
_LONGEST = 300
"""Characters of the engine's own words kept in a message: it may quote a whole build log."""
_P = ParamSpec("_P")
_R = TypeVar("_R")


def translate(exc: Exception) -> EngineError:
    """The EngineError saying, on one line, what the client's exception ``exc`` means."""
    if isinstance(exc, APIError):
        status = exc.status_code
        said = exc.explanation or str(exc)
        message = f"Docker engine refused the call ({status if status is not None else 'no status'}): {said}"
    elif isinstance(exc, BuildError):
        message = f"Docker engine failed a build: {exc.msg}"
    elif isinstance(exc, DockerException):
        message = f"Docker engine: {exc}"
    else:  # the HTTP libraries: the engine did not answer, or broke off an answer
        message = f"Docker engine not reachable ({exc.__class__.__name__}: {exc}): is dockerd running?"
    return EngineError(_one_line(message), not_found=isinstance(exc, NotFound))


@contextmanager
def engine_errors() -> Iterator[None]:
    """Inside: an exception of the Docker client's libraries leaves as its EngineError (chained)."""
    try:
        yield
    except ENGINE_ERRORS as exc:
        raise translate(exc) from exc


def edge(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """``func`` with its engine errors translated (``engine_errors`` around every call)."""

    @functools.wraps(func)
    def translated(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with engine_errors():
            return func(*args, **kwargs)

    return translated


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _LONGEST else flat[: _LONGEST - 3] + "..."
