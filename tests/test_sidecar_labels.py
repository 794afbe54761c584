"""What a Compose service may declare by labels, and the deploy book rollback goes back to."""

from __future__ import annotations

import json
import os
import stat

import pytest

from deeplops.faults import Repair
from deeplops.sidecar import deploys, labels
from deeplops.sidecar.deploys import DeployBook

PROJECT, SERVICE = "com.docker.compose.project", "com.docker.compose.service"

# -- labels -------------------------------------------------------------------------------------


def test_a_service_without_labels_may_only_be_restarted():
    declared = labels.declared({})
    assert declared.repairs == (Repair.RESTART,) and declared.refused == ()


def test_each_label_declares_its_repair():
    declared = labels.declared({"deeplops.clean": "/data/tmp, /var/log/app/*.log", "deeplops.recreate": "True",
                                "deeplops.rollback": "true"})  # fmt: skip
    assert declared.repairs == (Repair.RESTART, Repair.CLEAN_DISK, Repair.RECREATE, Repair.ROLLBACK)
    assert declared.clean == ("/data/tmp", "/var/log/app/*.log")
    assert declared.clean_dirs == ("/data/tmp", "/var/log/app")


def test_false_declares_nothing_and_is_not_a_refusal():
    declared = labels.declared({"deeplops.recreate": "false", "deeplops.rollback": "FALSE"})
    assert declared.repairs == (Repair.RESTART,) and declared.refused == ()


@pytest.mark.parametrize(
    "value, why",
    [
        ("/data/../etc", "'..' component"),
        ("/data/./x", "'..' component"),
        ("data/tmp", "not absolute"),
        ("/", "empty"),
        ("//etc", "empty"),
        ("/data//tmp", "empty"),
        ("/data/tmp/", "empty"),
        ("/*", "entries of / itself"),
        ("/data/*/logs", "glob before its last component"),
        ("/var/lo?/app", "glob before its last component"),
        ("/data/tmp\n/etc", "control character"),
        ("/" + "a" * 300, "longer than 256"),
        (",".join(f"/d{i}" for i in range(9)), "at most 8 paths"),
        (" , ", "got none"),
    ],
)
def test_a_clean_label_that_could_reach_beyond_the_folders_it_names_is_refused(value, why):
    declared = labels.declared({"deeplops.clean": value, "deeplops.rollback": "true"})
    assert declared.clean == () and Repair.CLEAN_DISK not in declared.repairs
    assert len(declared.refused) == 1 and why in declared.refused[0] and "deeplops.clean" in declared.refused[0]
    assert Repair.ROLLBACK in declared.repairs  # the other labels still count


@pytest.mark.parametrize("value", ["yes", "1", "alpine:3", "sha256:abc", ""])
def test_a_rollback_label_is_a_yes_or_a_no_never_an_image_to_go_to(value):
    declared = labels.declared({"deeplops.rollback": value})
    assert Repair.ROLLBACK not in declared.repairs
    assert declared.refused == (f"deeplops.rollback={value!r}: expected true or false",)


def test_a_glob_names_entries_of_its_own_folder_and_a_plain_path_everything_in_it():
    assert labels.split("/data/redis/temp-*") == ("/data/redis", "temp-*")
    assert labels.split("/data/tmp") == ("/data/tmp", "*")


# -- the deploy book ----------------------------------------------------------------------------


def spec(service: str, image: str, project: str = "web") -> dict:
    return {"Image": image, "Labels": {PROJECT: project, SERVICE: service}, "Env": [f"IMAGE={image}"]}


def test_the_first_sighting_is_not_a_deploy_and_a_change_is(tmp_path):
    book = DeployBook("web", tmp_path)
    assert not book.observe("api", "d1", lambda: spec("api", "sha256:1"), 100.0)
    assert book.previous("api") is None and book.since_change("api", 150.0) is None
    assert not book.observe("api", "d1", lambda: pytest.fail("an unchanged deploy's spec is not made again"), 120.0)
    assert book.observe("api", "d2", lambda: spec("api", "sha256:2"), 130.0)
    assert book.previous("api") == spec("api", "sha256:1")
    assert book.since_change("api", 150.0) == 20.0


def test_a_rollback_drops_the_bad_deploy_so_the_next_goes_further_back(tmp_path):
    book = DeployBook("web", tmp_path)
    for i in (1, 2, 3):
        book.observe("api", f"d{i}", lambda i=i: spec("api", f"sha256:{i}"), float(i))
    book.rolled_back("api", 10.0)
    assert not book.observe("api", "d2", lambda: spec("api", "sha256:2"), 11.0)  # what it runs now is known
    assert book.previous("api") == spec("api", "sha256:1")
    assert book.since_change("api", 12.0) == 2.0 and book.since_repair("api", 12.0) == 2.0
    book.rolled_back("api", 20.0)
    assert book.previous("api") is None  # nothing before its first deploy seen


def test_the_book_outlives_the_sidecar_in_a_file_only_root_reads(tmp_path):
    book = DeployBook("web", tmp_path)
    book.observe("api", "d1", lambda: spec("api", "sha256:1"), 1.0)
    book.observe("api", "d2", lambda: spec("api", "sha256:2"), 2.0)
    path = deploys.deploys_path("web", tmp_path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = DeployBook("web", tmp_path)
    assert again.previous("api") == spec("api", "sha256:1") and again.since_change("api", 5.0) == 3.0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_a_book_entry_that_names_another_project_or_service_is_never_rolled_back_to(tmp_path):
    path = deploys.deploys_path("web", tmp_path)
    forged = {"services": {"api": {"deploys": [{"digest": "a", "spec": spec("api", "sha256:evil", project="other")},
                                               {"digest": "b", "spec": spec("api", "sha256:2")}]},
                           "db": {"deploys": [{"digest": "a", "spec": spec("api", "sha256:1")},
                                              {"digest": "b", "spec": spec("db", "sha256:2")}]}}}  # fmt: skip
    path.write_text(json.dumps(forged))
    book = DeployBook("web", tmp_path)
    assert book.previous("api") is None and book.previous("db") is None


@pytest.mark.parametrize("text", ["not json", "[]", '{"services": {"api": {"deploys": [1]}}}', '{"services": 3}'])
def test_a_book_file_that_is_not_one_starts_an_empty_book(tmp_path, text):
    deploys.deploys_path("web", tmp_path).write_text(text)
    book = DeployBook("web", tmp_path)
    assert book.previous("api") is None
    assert not book.observe("api", "d1", lambda: spec("api", "sha256:1"), 1.0)  # and it is written anew
    written = json.loads(deploys.deploys_path("web", tmp_path).read_text())
    assert written["services"]["api"]["deploys"][0]["digest"] == "d1"


def test_a_book_file_reached_through_a_symlink_is_not_read(tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    two = [{"digest": "a", "spec": spec("api", "x")}, {"digest": "b", "spec": spec("api", "y")}]
    elsewhere.write_text(json.dumps({"services": {"api": {"deploys": two}}}))
    deploys.deploys_path("web", tmp_path).symlink_to(elsewhere)
    assert DeployBook("web", tmp_path).previous("api") is None


def test_a_change_of_image_or_configuration_is_a_new_digest_and_a_new_container_alone_is_not():
    attrs = {"Id": "c1", "Image": "sha256:1", "Config": {"Env": ["A=1"], "Labels": {"x": "1"}}, "HostConfig": {}}
    same = {**attrs, "Id": "c2", "Created": "2026-12-04T02:00:00Z"}
    assert deploys.digest(same) == deploys.digest(attrs)
    assert deploys.digest({**attrs, "Image": "sha256:2"}) != deploys.digest(attrs)
    assert deploys.digest({**attrs, "Config": {"Env": ["A=2"], "Labels": {"x": "1"}}}) != deploys.digest(attrs)


def test_the_engines_creation_time_is_read_to_the_fraction_of_a_second():
    assert deploys.created({"Created": "2026-12-04T02:00:01.250000000Z"}) == pytest.approx(1796349601.25)
    assert deploys.created({"Created": "garbage"}) is None


def test_a_book_of_a_project_taken_down_and_made_anew_under_its_name_is_dropped(tmp_path):
    book = DeployBook("web", tmp_path, networks=frozenset({"net-1"}))
    book.observe("api", "d1", lambda: spec("api", "sha256:1"), 1.0)
    book.observe("api", "d2", lambda: spec("api", "sha256:2"), 2.0)
    assert DeployBook("web", tmp_path, networks=frozenset({"net-1", "net-2"})).previous("api") is not None
    assert DeployBook("web", tmp_path, networks=frozenset({"net-3"})).previous("api") is None  # down, then up
    assert DeployBook("web", tmp_path, networks=frozenset({"net-1"})).previous("api") is None  # and forgotten
