"""Specification of topology loading (docs/design.md §4.1, §8): shipped files, derived arrays, validation errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deeplops.errors import ConfigError
from deeplops.topology import MAX_SERVICES, Topology, load_topology

SHIPPED = ("shop", "chain", "bank")


def write(tmp_path: Path, text: str, name: str = "topo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    """Load ``text`` as a topology file and return the ConfigError message it must raise."""
    with pytest.raises(ConfigError) as info:
        load_topology(write(tmp_path, text))
    return str(info.value)


# --- shipped topologies ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_topology_loads_by_name(name: str) -> None:
    topo = load_topology(name)
    assert topo.name == name
    assert topo.n_services == len(topo.names) > 0


def test_shop_has_the_services_of_its_file() -> None:
    topo = load_topology("shop")
    assert set(topo.names) == {"gateway", "api", "cache", "db", "queue", "worker"}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_dependency_has_a_lower_slot_than_its_dependent(name: str) -> None:
    topo = load_topology(name)
    for slot, service in enumerate(topo.services):
        for dep in service.depends_on:
            assert topo.index[dep] < slot, f"{service.name} depends on {dep}"


@pytest.mark.parametrize("name", SHIPPED)
def test_index_maps_each_name_to_its_slot(name: str) -> None:
    topo = load_topology(name)
    assert [topo.index[n] for n in topo.names] == list(range(topo.n_services))


def reachable(topo: Topology, name: str) -> set[str]:
    """Services a request to ``name`` reaches, found by walking depends_on (independent of the arrays)."""
    deps = {s.name: s.depends_on for s in topo.services}
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(deps[current])
    return seen


def longest_chain(topo: Topology, name: str) -> int:
    deps = {s.name: s.depends_on for s in topo.services}
    return max((1 + longest_chain(topo, d) for d in deps[name]), default=0)


@pytest.mark.parametrize("name", SHIPPED)
def test_closure_matches_walking_the_dependencies(name: str) -> None:
    topo = load_topology(name)
    for i, service in enumerate(topo.names):
        assert {topo.names[j] for j in np.flatnonzero(topo.closure[i])} == reachable(topo, service)


@pytest.mark.parametrize("name", SHIPPED)
def test_depth_matches_the_longest_dependency_chain(name: str) -> None:
    topo = load_topology(name)
    assert [int(d) for d in topo.depth] == [longest_chain(topo, n) for n in topo.names]


@pytest.mark.parametrize("name", SHIPPED)
def test_adjacency_matches_depends_on(name: str) -> None:
    topo = load_topology(name)
    edges = {(topo.names[i], topo.names[j]) for i, j in zip(*np.nonzero(topo.adjacency), strict=True)}
    assert edges == {(s.name, d) for s in topo.services for d in s.depends_on}


def test_independent_services_keep_the_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nservices:\n  web: {depends_on: [b, a], entry: true}\n  b: {}\n  a: {}\n")
    assert load_topology(path).names == ("b", "a", "web")


def test_shop_adjacency_matches_depends_on() -> None:
    topo = load_topology("shop")
    i = topo.index
    expected = np.zeros((6, 6), dtype=bool)
    for src, deps in {
        "gateway": ["api"],
        "api": ["cache", "db", "queue"],
        "worker": ["queue", "db"],
    }.items():
        for dep in deps:
            expected[i[src], i[dep]] = True
    assert topo.adjacency.shape == (6, 6)
    np.testing.assert_array_equal(topo.adjacency, expected)


def test_shop_closure_holds_everything_a_request_reaches() -> None:
    topo = load_topology("shop")
    i = topo.index
    reached = {name: {topo.names[j] for j in np.flatnonzero(topo.closure[i[name]])} for name in topo.names}
    assert reached["gateway"] == {"gateway", "api", "cache", "db", "queue"}
    assert reached["api"] == {"api", "cache", "db", "queue"}
    assert reached["worker"] == {"worker", "queue", "db"}
    assert reached["db"] == {"db"}


def test_chain_closure_is_transitive() -> None:
    topo = load_topology("chain")
    i = topo.index
    assert topo.closure[i["web"], i["db"]]
    assert not topo.adjacency[i["web"], i["db"]]
    assert not topo.closure[i["db"], i["web"]]


def test_shop_depth_is_longest_chain_below_each_service() -> None:
    topo = load_topology("shop")
    depth = {name: int(topo.depth[topo.index[name]]) for name in topo.names}
    assert depth == {"cache": 0, "db": 0, "queue": 0, "api": 1, "worker": 1, "gateway": 2}


def test_bank_depth_follows_the_longest_route() -> None:
    topo = load_topology("bank")
    depth = {name: int(topo.depth[topo.index[name]]) for name in topo.names}
    assert depth["mobile"] == 3  # mobile -> payments -> fraud -> cache
    assert depth["web"] == 2
    assert depth["payments"] == 2
    assert depth["ledger-db"] == 0


def test_bank_entries_and_volumes() -> None:
    topo = load_topology("bank")
    assert {topo.names[j] for j in np.flatnonzero(topo.entries)} == {"web", "mobile"}
    assert {topo.names[j] for j in np.flatnonzero(topo.has_disk)} == {"queue", "users-db", "ledger-db"}


def test_topology_loads_from_a_file_path(tmp_path: Path) -> None:
    path = write(tmp_path, "name: tiny\nservices:\n  web: {depends_on: [db], entry: true}\n  db: {disk_mb: 8}\n")
    topo = load_topology(path)
    assert topo.names == ("db", "web")
    assert topo.services[0].disk_mb == 8


# --- validation errors ----------------------------------------------------------------------------


def test_unknown_dependency_is_named_in_the_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nservices:\n  web: {depends_on: [ghost], entry: true}\n")
    assert "ghost" in message
    assert "web" in message
    assert "expected" in message


def test_topology_without_entry_service_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nservices:\n  web: {depends_on: [db]}\n  db: {}\n")
    assert "entry" in message


def test_dependency_cycle_is_rejected_and_shown(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        "name: t\nservices:\n  web: {depends_on: [a], entry: true}\n  a: {depends_on: [b]}\n  b: {depends_on: [a]}\n",
    )
    assert "cycle" in message
    assert "a -> b" in message or "b -> a" in message
    assert "acyclic" in message


def test_self_dependency_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nservices:\n  web: {depends_on: [web], entry: true}\n")
    assert "web" in message
    assert "itself" in message


def test_negative_disk_mb_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nservices:\n  web: {entry: true, disk_mb: -5}\n")
    assert "disk_mb" in message
    assert "-5" in message


@pytest.mark.parametrize("value", ["64MB", "1.5", "true"])
def test_non_integer_disk_mb_is_rejected(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, f"name: t\nservices:\n  web: {{entry: true, disk_mb: {value}}}\n")
    assert "disk_mb" in message
    assert "web" in message


def test_unknown_service_key_is_named_in_the_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nservices:\n  web: {entry: true, replicas: 3}\n")
    assert "replicas" in message
    assert "depends_on" in message  # the valid keys are listed


def test_unknown_top_level_key_is_named_in_the_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nversion: 2\nservices:\n  web: {entry: true}\n")
    assert "version" in message
    assert "services" in message


def test_more_than_max_services_is_rejected(tmp_path: Path) -> None:
    count = MAX_SERVICES + 1
    lines = ["name: big", "services:", "  s0: {entry: true}"] + [f"  s{k}: {{}}" for k in range(1, count)]
    message = load_error(tmp_path, "\n".join(lines) + "\n")
    assert str(MAX_SERVICES) in message
    assert str(count) in message


def test_exactly_max_services_is_accepted(tmp_path: Path) -> None:
    lines = ["name: big", "services:", "  s0: {entry: true}"] + [f"  s{k}: {{}}" for k in range(1, MAX_SERVICES)]
    assert load_topology(write(tmp_path, "\n".join(lines) + "\n")).n_services == MAX_SERVICES


def test_malformed_yaml_error_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: t\nservices:\n  web: {depends_on: [db, entry: true}\n  db: {}\n")
    assert "line 3" in message
    assert "topo.yaml" in message


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_topology(missing)
    assert "absent.yaml" in str(info.value)
    assert "shop" in str(info.value)  # the shipped names are offered instead


# --- restart_s: how long a service takes to start -------------------------------------------------


def test_restart_s_is_read_per_service_and_listed_in_slot_order(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nservices:\n  web: {depends_on: [db], entry: true}\n  db: {restart_s: 3}\n")
    topo = load_topology(path)
    assert topo.names == ("db", "web")
    assert topo.restart_s == (3.0, None)
    assert isinstance(topo.restart_s[0], float)


@pytest.mark.parametrize("value", ["0", "60", "2.5"])
def test_restart_s_within_its_bound_is_accepted(tmp_path: Path, value: str) -> None:
    topo = load_topology(write(tmp_path, f"name: t\nservices:\n  web: {{entry: true, restart_s: {value}}}\n"))
    assert topo.restart_s == (float(value),)


@pytest.mark.parametrize(("value", "shown"), [("-1", "-1"), ("60.5", "60.5"), ("slow", "'slow'"), (".nan", "nan"),
                                              ("true", "True"), ("~", "nothing"), ("[3]", "a list")])  # fmt: skip
def test_restart_s_out_of_bounds_names_the_service_the_field_the_bound_and_the_value(
    tmp_path: Path, value: str, shown: str
) -> None:
    message = load_error(tmp_path, f"name: t\nservices:\n  web: {{entry: true, restart_s: {value}}}\n")
    assert "service 'web'" in message
    assert "'restart_s' (seconds) must be a number in [0, 60]" in message
    assert message.endswith(f"got {shown}")


def test_topology_to_dict_writes_restart_s_only_where_set() -> None:
    from deeplops.topology import topology_from_dict, topology_to_dict

    doc = {"name": "t", "services": {"web": {"depends_on": ["db"], "entry": True}, "db": {"restart_s": 3}}}
    topo = topology_from_dict(doc)
    again = topology_to_dict(topo)
    assert again["services"] == {"db": {"restart_s": 3.0}, "web": {"depends_on": ["db"], "entry": True}}
    assert topology_from_dict(again) == topo


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_topology_sets_no_restart_s_and_its_document_is_unchanged(name: str) -> None:
    from deeplops.topology import topology_to_dict

    topo = load_topology(name)
    assert topo.restart_s == (None,) * topo.n_services
    assert all("restart_s" not in spec for spec in topology_to_dict(topo)["services"].values())
