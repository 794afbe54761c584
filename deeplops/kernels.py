"""Calling compiled kernels with named records of arrays, without numba's typing on each call.

The simulator and the game keep their state in ``typing.NamedTuple`` records of arrays, built
once and updated in place, and hand them to ``@njit`` kernels whole. Numba's dispatcher types
every argument on every call, and it types a NamedTuple by encoding its class and field names:
for the simulator's records that costs several times a one-env tick (some 15 µs against 3-5 µs
on the 2-core development machine). So the owner of the records looks up the kernel's compiled
code for their types once, with :func:`compiled_for`, and calls that on every tick. That code
checks none of its arguments, so an array handed in from outside goes through
:func:`checked_array` first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import typeof
from numba.core.dispatcher import Dispatcher
from numba.core.types import Type
from numpy.typing import ArrayLike, DTypeLike


def compiled_for(kernel: Dispatcher, *args: object) -> Callable[..., Any]:
    """``kernel``'s compiled code for the types of ``args`` (compiled or loaded from numba's cache).

    The result skips numba's per-call typing, and nothing checks its arguments: call it only with
    arguments of exactly the types of ``args`` (the same records, or records of arrays of the same
    dtypes and dimensions; Python ints where ``args`` has ints).
    """
    key = (kernel, *map(_kind, args))
    code = _COMPILED.get(key)
    if code is None:
        code = _COMPILED[key] = _compile(kernel, tuple(typeof(arg) for arg in args))
    return code


_COMPILED: dict[tuple[object, ...], Callable[..., Any]] = {}
"""Compiled code by kernel and argument kinds: numba's ``typeof`` of a record costs a tenth of a
millisecond or more, and games and sandboxes are made anew for every batch of episodes."""


def _kind(value: object) -> object:
    """All that numba's type of ``value`` depends on (and a little more), cheaper to find than that type."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        return value.dtype, value.ndim, flags.c_contiguous, flags.f_contiguous, flags.writeable, flags.aligned
    if isinstance(value, tuple):
        return type(value), *map(_kind, value)
    return type(value)


def _compile(kernel: Dispatcher, signature: tuple[Type, ...]) -> Callable[..., Any]:
    try:
        return kernel.compile(signature)  # type: ignore[no-any-return]
    except (AttributeError, ImportError):
        # Numba's on-disk index for this kernel names a record type that was renamed or moved
        # since: unpickling the index fails before numba finds it stale. Empty it and compile.
        kernel._cache.flush()  # type: ignore[attr-defined]
        return kernel.compile(signature)  # type: ignore[no-any-return]


def checked_array(values: ArrayLike, dtype: DTypeLike, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` as a compiled kernel may take them: ``dtype``, contiguous, ``shape``.

    An array that already is so is returned as it is; anything else is converted (copied). For
    arrays handed in from outside, before they reach code from :func:`compiled_for`.

    Raises:
        ValueError: ``values`` does not have ``shape``.
    """
    out: np.ndarray = np.ascontiguousarray(values, dtype)
    if out.shape != shape:
        raise ValueError(f"expected an array of shape {shape}, got shape {np.shape(values)}")
    return out
