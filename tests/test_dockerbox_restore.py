"""The Docker backend's restore from backup and slow starts, without an engine (docs/design.md §4.2):
what a volume's data is, the plan a recreate leaves for the service program (which reads it as the
host wrote it), how long the restore takes, the check that it brought the data back, and what a
service's container is told."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deeplops.dockerbox import host, mechanisms, restore, stack
from deeplops.dockerbox.handle import StackHandle
from deeplops.errors import SandboxError
from deeplops.system import MEMORY_MB, RESTORE_TICKS_PER_VOLUME
from deeplops.topology import Service, topology_from_dict

DB = Service("db", disk_mb=16)
MIB = 2**20


@pytest.fixture
def volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The db's volume of sandbox ``box``: a plain folder under a state directory of the test's own."""
    monkeypatch.setattr(host, "STATE_DIR", tmp_path)
    path = host.volume_dir("box", "db")
    path.mkdir(parents=True)
    return path


def service_program(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``sandbox/service.py`` as a module (it runs in the container, so it is no part of the package)."""
    path = Path(__file__).parents[1] / "sandbox" / "service.py"
    spec = importlib.util.spec_from_file_location("deeplops_service_program", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses find their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("size", "ticks"), [(0, 0), (1, 1), (4 * MIB, 10), (int(0.2012 * 16 * MIB), 9), (16 * MIB, 40)]
)
def test_a_restore_takes_ceil_of_the_data_fraction_times_the_ticks_of_a_full_volume(size: int, ticks: int) -> None:
    assert RESTORE_TICKS_PER_VOLUME == 40.0
    assert restore.restore_ticks(size, DB) == ticks


def test_the_data_is_the_data_file_and_never_the_junk_a_disk_full_wrote(volume: Path) -> None:
    (volume / restore.DATA_NAME).write_bytes(b"\1" * 3000)
    (volume / "junk-0.fill").write_bytes(b"\xff" * 9000)
    (volume / "records.log").write_bytes(b"x" * 100)
    assert restore.data_size("box", DB) == 3000
    assert restore.data_held("box", DB) == 3000


def test_a_volume_without_its_data_file_holds_no_data(volume: Path) -> None:
    assert restore.data_size("box", DB) == 0 and restore.planned_size("box", DB) is None


def test_a_data_file_planted_as_a_link_counts_as_no_data(volume: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_bytes(b"\1" * 5000)
    (volume / restore.DATA_NAME).symlink_to(tmp_path / "elsewhere")
    assert restore.data_size("box", DB) == 0


def test_a_sparse_data_file_counts_at_most_the_volumes_size(volume: Path) -> None:
    with open(volume / restore.DATA_NAME, "wb") as f:
        f.truncate(100 * MIB)
    assert restore.data_size("box", DB) == 16 * MIB


def test_the_plan_is_what_the_service_program_reads(volume: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = restore.plan("box", DB, 4 * MIB)
    plan = service_program(monkeypatch).load_plan(str(volume / restore.PLAN_NAME))
    assert (plan.file, plan.size, plan.seconds, plan.byte) == (restore.DATA_NAME, 4 * MIB, float(ticks), 1)
    assert ticks == 10


def test_a_restore_under_way_is_owed_all_its_data_whatever_it_restored_so_far(volume: Path) -> None:
    restore.plan("box", DB, 4 * MIB)
    (volume / restore.DATA_NAME).write_bytes(b"\1" * MIB)
    assert restore.planned_size("box", DB) == 4 * MIB
    assert restore.data_held("box", DB) == 4 * MIB  # a second recreate restores it all again


@pytest.mark.parametrize("text", ["not json", "[1]", '{"size": -1}', '{"size": true}', '{"size": "big"}'])
def test_a_plan_that_is_not_one_counts_as_none(volume: Path, text: str) -> None:
    (volume / restore.PLAN_NAME).write_text(text)
    assert restore.planned_size("box", DB) is None


def test_a_plan_planted_as_a_link_is_not_followed(volume: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.json").write_text(json.dumps({"size": 4 * MIB}))
    (volume / restore.PLAN_NAME).symlink_to(tmp_path / "elsewhere.json")
    assert restore.planned_size("box", DB) is None


def test_a_planned_size_counts_at_most_the_volumes_size(volume: Path) -> None:
    (volume / restore.PLAN_NAME).write_text(json.dumps({"size": 10**15}))
    assert restore.planned_size("box", DB) == 16 * MIB


def handle_restoring(size: int) -> StackHandle:
    topology = topology_from_dict({"name": "t", "services": {"web": {"entry": True, "depends_on": ["db"]},
                                                             "db": {"disk_mb": 16}}})  # fmt: skip
    return StackHandle(client=None, name="box", topology=topology, rewire=lambda *a, **k: None,  # type: ignore[arg-type]
                       restores={"db": size})  # fmt: skip


def test_a_restore_still_under_way_is_not_finished(volume: Path) -> None:
    handle = handle_restoring(4 * MIB)
    restore.plan("box", DB, 4 * MIB)
    assert mechanisms.finish_restores(handle) == [] and handle.restores == {"db": 4 * MIB}


def test_a_restore_that_brought_all_the_data_back_is_finished(volume: Path) -> None:
    handle = handle_restoring(4 * MIB)
    (volume / restore.DATA_NAME).write_bytes(b"\1" * (4 * MIB))
    assert mechanisms.finish_restores(handle) == ["db"] and handle.restores == {}


def test_a_restore_that_ended_short_of_its_data_is_an_error_naming_it(volume: Path) -> None:
    handle = handle_restoring(4 * MIB)
    (volume / restore.DATA_NAME).write_bytes(b"\1" * MIB)
    with pytest.raises(SandboxError, match=f"restore of db ended with {MIB} of its {4 * MIB} bytes"):
        mechanisms.finish_restores(handle)


def started_with(service: Service) -> dict[str, Any]:
    """What ``stack.start_service`` asks the engine for."""
    asked: dict[str, Any] = {}

    def run(image: str, **kwargs: Any) -> None:
        asked.update(kwargs)

    client = SimpleNamespace(containers=SimpleNamespace(run=run),
                             api=SimpleNamespace(create_endpoint_config=lambda **kwargs: kwargs))  # fmt: skip
    stack.start_service(client, "box", service, "image")  # type: ignore[arg-type]
    return asked


def test_a_service_with_restart_s_is_told_to_start_that_slowly() -> None:
    env = started_with(Service("api", restart_s=3.0))["environment"]
    assert env["DEEPLOPS_START_S"] == "3.0"
    assert "DEEPLOPS_RESTORE_PLAN" not in env


def test_a_service_without_restart_s_or_a_volume_is_started_as_before() -> None:
    asked = started_with(Service("api"))
    assert not {"DEEPLOPS_START_S", "DEEPLOPS_RESTORE_PLAN"} & set(asked["environment"])
    assert asked["mem_limit"] == f"{MEMORY_MB}m"


def test_a_service_with_a_volume_is_told_where_a_restore_plan_would_be_and_has_memory_for_its_volume(
    volume: Path,
) -> None:
    asked = started_with(DB)
    assert asked["environment"]["DEEPLOPS_RESTORE_PLAN"] == f"/data/{restore.PLAN_NAME}"
    assert asked["mem_limit"] == f"{MEMORY_MB + 16}m"  # what it restores into its tmpfs is charged to it


def test_a_service_whose_volume_is_missing_holds_no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "STATE_DIR", tmp_path)
    assert restore.data_held("box", DB) == 0
