"""Specification of deeplops.kernels: compiled kernels called with named records of arrays."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deeplops.kernels import checked_array, compiled_for

KERNEL_MODULE = """
from typing import NamedTuple

import numpy as np
from numba import njit


class {record}(NamedTuple):
    counts: np.ndarray


@njit(cache=True)
def bump(record, by):
    record.counts[0] += by
"""


def kernel_module(directory: Path, record: str) -> object:
    """A module in ``directory`` with a record type named ``record`` and a cached kernel taking it."""
    (directory / "records_under_test.py").write_text(KERNEL_MODULE.format(record=record))
    sys.modules.pop("records_under_test", None)
    importlib.invalidate_caches()
    return importlib.import_module("records_under_test")


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("records_under_test", None)


def test_compiled_code_updates_the_records_arrays_in_place(module_dir: Path) -> None:
    module = kernel_module(module_dir, "Counter")
    counts = np.zeros(1, np.int64)
    record = module.Counter(counts)  # type: ignore[attr-defined]
    bump = compiled_for(module.bump, record, 0)  # type: ignore[attr-defined]
    bump(record, 2)
    bump(record, 3)
    assert counts[0] == 5


def test_a_cache_index_naming_a_renamed_record_is_compiled_afresh(module_dir: Path) -> None:
    old = kernel_module(module_dir, "Counter")
    compiled_for(old.bump, old.Counter(np.zeros(1, np.int64)), 0)  # type: ignore[attr-defined]
    new = kernel_module(module_dir, "Tally")  # same kernel, same line: numba reads the old index
    counts = np.zeros(1, np.int64)
    compiled_for(new.bump, new.Tally(counts), 0)(new.Tally(counts), 1)  # type: ignore[attr-defined]
    assert counts[0] == 1


def test_checked_array_hands_back_an_array_that_already_fits() -> None:
    actions = np.array([3, 0], np.int64)
    assert checked_array(actions, np.int64, (2,)) is actions


def test_checked_array_converts_other_integer_types_and_strided_views() -> None:
    for given in (np.array([3, 0], np.int32), np.array([3, 9, 0, 9], np.int64)[::2], [3, 0]):
        taken = checked_array(given, np.int64, (2,))
        assert taken.dtype == np.int64 and taken.flags.c_contiguous
        assert taken.tolist() == [3, 0]


def test_checked_array_refuses_another_shape() -> None:
    with pytest.raises(ValueError, match=r"expected an array of shape \(2,\), got shape \(2, 1\)"):
        checked_array(np.zeros((2, 1), np.int64), np.int64, (2,))
