"""The Docker backend runs as root, so it must not harm the host: a sandbox name never leaves the
state directory, removal never follows a link or crosses into a mount it did not make, a
topology's volumes must fit in memory, and a sandbox's owner is told from a reused PID.

No engine is needed: every refusal here happens before the engine is contacted. Tests that mount
file systems need root and are skipped without it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from deeplops.dockerbox import host, reaper, stack
from deeplops.dockerbox.owner import owner_gone, owner_id
from deeplops.errors import SandboxError
from deeplops.topology import Service, Topology, build_topology, load_topology

BAD_NAMES = ["../victim", "..", ".", "", "/", "a/b", "-rf", "_x", "Upper", "a b", "line\nbreak", "x" * 32, "é"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private STATE_DIR, with a victim folder and file beside it that nothing may touch."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    monkeypatch.setattr(host, "STATE_DIR", state_dir)
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "precious").write_text("keep me")
    return state_dir


def victim_intact(state_dir: Path) -> bool:
    victim = state_dir.parent / "victim"
    return victim.is_dir() and not victim.is_symlink() and (victim / "precious").read_text() == "keep me"


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("deeplops: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# -- the name rule -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "demo", "dltest-1234", "deeplops-calibrate-1700000000", "0_x", "x" * 31])
def test_a_valid_name_is_accepted(name):
    assert host.check_name(name) == name


@pytest.mark.parametrize("name", [*BAD_NAMES, None, 7])
def test_a_name_that_is_not_a_plain_label_is_refused_on_one_line(name):
    with pytest.raises(SandboxError, match=r"sandbox name .* is invalid: expected 1 to 31 lower-case") as raised:
        host.check_name(name)
    assert "\n" not in str(raised.value)


# -- every door refuses a bad name before touching anything --------------------------------


@pytest.mark.parametrize("command", ["down", "up", "status"])
@pytest.mark.parametrize("name", ["../victim", "", "/"])
def test_sandbox_commands_refuse_a_bad_name_and_touch_nothing(cli, state, command, name):
    result = cli("sandbox", command, "--name", name)
    assert_one_line_error(result, "sandbox name", "is invalid")
    assert victim_intact(state)
    assert list(state.iterdir()) == []


def test_sandbox_down_refuses_an_absolute_path_as_a_name(cli, state):
    victim = state.parent / "victim"
    result = cli("sandbox", "down", "--name", str(victim))
    assert_one_line_error(result, repr(str(victim))[:20])
    assert victim_intact(state)


def test_sandbox_down_all_and_stale_still_check_the_name(cli, state):
    for flag in ("--all", "--stale"):
        assert_one_line_error(cli("sandbox", "down", flag, "--name", "../victim"), "is invalid")
    assert victim_intact(state)


def test_the_library_refuses_a_bad_name_at_every_door(state):
    from deeplops.chaostoolkit import actions
    from deeplops.dockerbox import attached
    from deeplops.dockerbox.sandbox import DockerSandbox

    chain = load_topology("chain")
    doors = {
        "stack.up": lambda: stack.up(None, chain, "../victim", "image", {}),  # type: ignore[arg-type]
        "stack.down": lambda: stack.down("../victim", None),
        "host.volume_dir": lambda: host.volume_dir("../victim", "db"),
        "host.volume_dir (service)": lambda: host.volume_dir("ok", "../victim"),
        "host.sandbox_dir": lambda: host.sandbox_dir(""),
        "DockerSandbox": lambda: DockerSandbox(chain, name="../victim"),
        "DockerSandbox (empty)": lambda: DockerSandbox(chain, name=""),
        "DockerSandbox.attach": lambda: DockerSandbox.attach("/"),
        "reaper": lambda: reaper.main("1:1:x:1", "../victim"),
        "attached.sandbox": lambda: attached.sandbox("../victim"),
        "chaostoolkit": lambda: actions.inject_fault("kill", "db", "../victim"),
    }
    for door, call in doors.items():
        with pytest.raises(SandboxError, match="is invalid"):
            call()
            pytest.fail(f"{door} accepted a bad name")
    assert victim_intact(state)


# -- removal stays inside the state directory and follows nothing -------------------------


@pytest.mark.parametrize("where", ["victim", "state/..", "/", "state/a/b", "state"])
def test_removal_refuses_a_path_that_is_not_a_sandbox_directory_in_the_state_dir(state, where):
    path = Path(where) if where.startswith("/") else state.parent / where
    with pytest.raises(SandboxError, match="refusing to remove"):
        host.unmount_all(path)
    assert victim_intact(state)


def test_removal_deletes_links_inside_a_sandbox_not_what_they_point_at(state):
    victim = state.parent / "victim"
    sandbox = state / "box"
    (sandbox / "db").mkdir(parents=True)
    (sandbox / "db" / "data.bin").write_bytes(b"x")
    (sandbox / "db" / "junk-0.fill").symlink_to(victim / "precious")
    (sandbox / "cache").symlink_to(victim)
    host.unmount_all(sandbox)
    assert not sandbox.exists()
    assert victim_intact(state)


def test_a_link_in_place_of_a_sandbox_directory_is_removed_as_a_link(state):
    (state / "box").symlink_to(state.parent / "victim")
    host.unmount_all(state / "box")
    assert not os.path.lexists(state / "box")
    assert victim_intact(state)


@needs_root
def test_removal_detaches_a_bind_mount_inside_instead_of_emptying_it(state):
    victim = state.parent / "victim"
    inside = state / "box" / "db"
    inside.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(victim), str(inside)], check=True)
    try:
        host.unmount_all(state / "box")
    finally:
        if host.mounts_under(inside):
            subprocess.run(["umount", "-l", str(inside)])
    assert not (state / "box").exists()
    assert victim_intact(state)


@needs_root
def test_removal_unmounts_the_volumes_of_a_sandbox(state):
    volume = host.volume_dir("box", "db")
    host.mount_volume(volume, 1)
    (volume / "data.bin").write_bytes(b"x")
    host.unmount_all(host.sandbox_dir("box"))
    assert host.mounts_under(state) == []
    assert not (state / "box").exists()


@needs_root
def test_a_volume_is_not_mounted_over_a_link(state):
    (state / "box").mkdir()
    (state / "box" / "db").symlink_to(state.parent / "victim")
    with pytest.raises(SandboxError, match="is not a directory"):
        host.mount_volume(host.volume_dir("box", "db"), 1)
    assert host.mounts_under(state.parent) == []
    assert victim_intact(state)


# -- files in a volume are made and removed through its descriptor, never through a link ---


def test_a_new_file_replaces_a_planted_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "host-file"
    target.write_text("host data")
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "junk-0.fill").symlink_to(target)
    with host.open_volume(volume) as fd:
        new = host.create_in(fd, "junk-0.fill")
        assert new is not None
        os.write(new, b"junk")
        os.close(new)
    assert target.read_text() == "host data"
    assert (volume / "junk-0.fill").read_bytes() == b"junk" and not (volume / "junk-0.fill").is_symlink()


def test_a_name_held_by_a_directory_is_skipped(tmp_path):
    (tmp_path / "volume" / "junk-0.fill").mkdir(parents=True)
    with host.open_volume(tmp_path / "volume") as fd:
        assert host.create_in(fd, "junk-0.fill") is None


def test_a_volume_that_is_a_link_is_not_opened(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "volume").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SandboxError, match="cannot open the volume"), host.open_volume(tmp_path / "volume"):
        pass


def test_removing_a_planted_link_leaves_its_target(tmp_path):
    target = tmp_path / "host-file"
    target.write_text("host data")
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "junk-9.fill").symlink_to(target)
    with host.open_volume(tmp_path / "volume") as fd:
        assert host.remove_in(fd, "junk-9.fill")
    assert target.read_text() == "host data"
    assert not os.path.lexists(tmp_path / "volume" / "junk-9.fill")


# -- an interrupted base image build -------------------------------------------------------


@needs_root
def test_an_interrupted_base_build_detaches_its_mounts_before_removing_its_folder(tmp_path, monkeypatch):
    """debootstrap binds host folders (/dev/shm, /dev/pts) into the root file system and unmounts
    them only when it exits by itself; killed, it leaves them, and the folder's removal follows."""
    import tempfile

    from deeplops.dockerbox import image

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    built = tmp_path / "tmp"
    built.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(built))
    monkeypatch.setattr(image.shutil, "which", lambda name: "/usr/sbin/debootstrap")

    def interrupted_debootstrap(cmd, **kwargs):
        shm = Path(cmd[-2]) / "dev" / "shm"
        shm.mkdir(parents=True)
        subprocess.run(["mount", "--bind", str(victim), str(shm)], check=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(image, "subprocess", SimpleNamespace(run=interrupted_debootstrap))
    try:
        with pytest.raises(KeyboardInterrupt):
            image.build_base(None, log=lambda line: None)  # type: ignore[arg-type]
    finally:
        for point in host.mounts_under(built):
            subprocess.run(["umount", "-l", str(point)])
    assert (victim / "precious").read_text() == "keep me"
    assert host.mounts_under(built) == []
    assert list(built.iterdir()) == []


# -- the volumes must fit in memory --------------------------------------------------------


@pytest.fixture
def little_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host with 1000 MiB available."""
    monkeypatch.setattr(stack.psutil, "virtual_memory", lambda: SimpleNamespace(available=1000 * 2**20))


def big_topology(mb: int = 1024) -> Topology:
    return build_topology("big", [Service("a", entry=True, disk_mb=mb), Service("b", disk_mb=mb)])


def test_volumes_larger_than_a_share_of_available_memory_are_refused(little_memory):
    with pytest.raises(SandboxError, match=r"need 2048 MiB of memory .* of the 1000 MiB this host has available"):
        stack.check_memory(big_topology())


def test_volumes_within_the_share_are_accepted(little_memory):
    stack.check_memory(big_topology(200))


def test_sandbox_up_refuses_volumes_that_do_not_fit_before_anything_starts(cli, state, little_memory, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nservices:\n  a: {entry: true, disk_mb: 1024}\n  b: {disk_mb: 1024}\n")
    result = cli("sandbox", "up", "--env", str(path), "--name", f"dlbig-{os.getpid()}")
    assert_one_line_error(result, "2048 MiB", "1000 MiB")
    assert list(state.iterdir()) == []


def test_stack_up_refuses_volumes_that_do_not_fit_before_anything_starts(state, little_memory):
    with pytest.raises(SandboxError, match="2048 MiB"):
        stack.up(None, big_topology(), "big", "image", {})  # type: ignore[arg-type]
    assert list(state.iterdir()) == []


# -- a sandbox's owner ---------------------------------------------------------------------


def test_a_live_owner_is_not_gone():
    assert not owner_gone(owner_id(os.getpid()))


def test_a_reused_pid_is_not_mistaken_for_the_owner():
    pid, start, boot, ns = owner_id(os.getpid()).split(":")
    assert owner_gone(f"{pid}:{int(start) + 1}:{boot}:{ns}")


def test_an_exited_owner_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    owner = owner_id(child.pid)
    assert not owner_gone(owner)
    child.communicate()
    assert owner_gone(owner)


def test_a_zombie_owner_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    owner = owner_id(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # not yet waited for
        os.sched_yield()
    assert owner_gone(owner)
    child.wait()


def test_an_owner_from_an_earlier_boot_is_gone():
    pid, start, _, ns = owner_id(os.getpid()).split(":")
    assert owner_gone(f"{pid}:{start}:another-boot:{ns}")


def test_an_owner_in_another_pid_namespace_cannot_be_judged_so_is_not_gone():
    _, start, boot, _ = owner_id(os.getpid()).split(":")
    assert not owner_gone(f"999999:{start}:{boot}:1")


@pytest.mark.parametrize("record", ["", "garbage", "1:2:3", "x:1:b:1"])
def test_an_owner_record_not_written_by_deeplops_is_not_gone(record):
    assert not owner_gone(record)


# -- signals while a sandbox comes up ------------------------------------------------------


def test_signals_during_a_cleanup_are_held_until_it_is_done():
    done = []
    # Ctrl-C as in a terminal, even where the test run was started in the background (SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), stack.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("cleanup finished")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["cleanup finished"]


def test_sigterm_unwinds_as_an_exit_while_a_sandbox_comes_up():
    """In a process of its own: where it did not, SIGTERM would end the test run."""
    code = (
        "import os, signal\n"
        "from deeplops.dockerbox import stack\n"
        "try:\n"
        "    with stack.terminate_unwinds():\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "finally:\n"
        "    print('unwound', signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (128 + signal.SIGTERM, "unwound True")


@pytest.fixture(autouse=True)
def _no_leaked_handlers() -> Iterator[None]:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    assert {sig: signal.getsignal(sig) for sig in before} == before
