"""Specification of the action layout and the role tables: encoding, the order mask, the padded graph."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from deeplops.actions import (
    N_ACTIONS,
    N_CHAOS_ACTIONS,
    N_ORDER_ACTIONS,
    OBSERVATION_SPACE,
    OPPONENT,
    Role,
    chaos_action,
    decode_chaos,
    decode_order,
    order_action,
    order_actions,
    order_mask,
    order_slots,
    padded_adjacency,
)
from deeplops.faults import REPAIRS, Fault, Repair
from deeplops.observation import MAX_SLOTS
from deeplops.topology import Topology, load_topology


@pytest.fixture(scope="module")
def shop() -> Topology:
    return load_topology("shop")


# --- encoding -------------------------------------------------------------------------------------


def test_chaos_action_is_one_plus_slot_times_eight_plus_fault_offset() -> None:
    assert chaos_action(0, Fault.KILL) == 1
    assert chaos_action(0, Fault.CONN_LEAK) == 8
    assert chaos_action(2, Fault.DISK_FULL) == 20
    assert chaos_action(MAX_SLOTS - 1, Fault.CONN_LEAK) == N_CHAOS_ACTIONS - 1 == 128


def test_order_action_is_one_plus_slot_times_five_plus_repair_offset() -> None:
    assert order_action(0, Repair.NOOP) == 0
    assert order_action(0, Repair.RESTART) == 1
    assert order_action(3, Repair.RECREATE) == 19
    assert order_action(MAX_SLOTS - 1, Repair.ROLLBACK) == N_ORDER_ACTIONS - 1 == 80


def test_action_decoding_inverts_encoding() -> None:
    for s in range(MAX_SLOTS):
        for fault in Fault:
            assert decode_chaos(chaos_action(s, fault)) == (s, fault)
        for repair in (Repair.RESTART, Repair.CLEAN_DISK, Repair.RATE_LIMIT, Repair.RECREATE, Repair.ROLLBACK):
            assert decode_order(order_action(s, repair)) == (s, repair)
    assert decode_chaos(0) == (0, None)
    assert decode_order(0) == (0, Repair.NOOP)


def test_array_encoding_of_orders_matches_the_scalar_one() -> None:
    slots = np.repeat(np.arange(MAX_SLOTS), len(REPAIRS))
    repairs = np.tile(np.array([int(r) for r in REPAIRS]), MAX_SLOTS)
    actions = order_actions(slots, repairs)
    assert actions.tolist() == [order_action(int(s), Repair(int(r))) for s, r in zip(slots, repairs, strict=True)]
    np.testing.assert_array_equal(order_slots(actions), slots)


# --- the order mask -------------------------------------------------------------------------------


def test_order_mask_allows_noop_and_every_repair_on_present_services_only(shop: Topology) -> None:
    mask = order_mask(shop, n_envs=3)
    assert mask.shape == (3, N_ORDER_ACTIONS)
    row = mask[0]
    assert row[0]
    for s in range(MAX_SLOTS):
        for repair in (Repair.RESTART, Repair.RATE_LIMIT, Repair.RECREATE):
            assert row[order_action(s, repair)] == (s < shop.n_services)


def test_order_mask_allows_clean_disk_only_on_services_with_a_volume(shop: Topology) -> None:
    row = order_mask(shop)[0]
    for s in range(shop.n_services):
        assert row[order_action(s, Repair.CLEAN_DISK)] == shop.has_disk[s]
        assert row[order_action(s, Repair.RECREATE)]  # recreate needs no volume


def test_order_mask_of_a_restricted_repair_set_allows_only_those(shop: Topology) -> None:
    row = order_mask(shop, repairs=(Repair.RESTART,))[0]
    assert row.sum() == 1 + shop.n_services
    assert all(row[order_action(s, Repair.RESTART)] for s in range(shop.n_services))


def test_order_mask_is_read_only(shop: Topology) -> None:
    with pytest.raises(ValueError, match="read-only"):
        order_mask(shop)[0, 0] = False


# --- the padded graph -----------------------------------------------------------------------------


def test_padded_adjacency_holds_the_topology_graph_in_its_first_slots(shop: Topology) -> None:
    n = shop.n_services
    adjacency = padded_adjacency(shop, n_envs=2)
    assert adjacency.shape == (2, MAX_SLOTS, MAX_SLOTS) and adjacency.dtype == np.int8
    np.testing.assert_array_equal(adjacency[1, :n, :n], shop.adjacency)
    assert not adjacency[:, n:, :].any() and not adjacency[:, :, n:].any()


# --- the role tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_every_role_has_an_opponent_an_action_count_and_an_observation_space(role: Role) -> None:
    assert OPPONENT[OPPONENT[role]] is role and OPPONENT[role] is not role
    assert N_ACTIONS[role] in (N_ORDER_ACTIONS, N_CHAOS_ACTIONS)
    space = OBSERVATION_SPACE[role]()
    assert {"services", "adjacency"} <= set(space.spaces)


def test_roles_are_told_apart_by_their_action_counts() -> None:
    assert len(set(N_ACTIONS.values())) == len(Role)


# --- layering -------------------------------------------------------------------------------------


def _imported_by(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('deeplops')))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_the_action_layout_imports_nothing_above_it() -> None:
    above = {"deeplops.game", "deeplops.policies", "deeplops.baselines", "deeplops.learned", "deeplops.sandbox"}
    assert not _imported_by("deeplops.actions") & above


def test_the_game_and_the_baselines_do_not_import_the_policy_registry() -> None:
    assert "deeplops.policies" not in _imported_by("deeplops.game")
    assert "deeplops.policies" not in _imported_by("deeplops.baselines")


def test_every_module_of_the_package_has_a_place_in_the_import_layers() -> None:
    # lint-imports checks only the modules its layers name: a module left out is never checked.
    import pkgutil
    from pathlib import Path

    import tomllib

    import deeplops

    root = Path(deeplops.__file__).parent
    config = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {module.strip() for layer in layers for module in layer.split(":")}
    modules = {m.name for m in pkgutil.iter_modules([str(root)])}
    assert modules - named == set()
