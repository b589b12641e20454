"""Pipe settings, inheritance, self-hosted pipes, profiles and their config, PipeLocal."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipedaemon_sdk import (
    InvalidSettingsError,
    NotFoundError,
    PipeClient,
    PipeLocal,
    autostart,
)
from pipedaemon_sdk._sync import SyncConnection
from tests.support.pipes import Storage
from tests.support.spine import daemon_pids, wait_gone


def test_crud_and_inheritance(client: PipeClient, local_storage: Storage) -> None:
    assert client.upsert_pipe({"name": "vendor-parent", "remote": "r", "options": {"include": "*.csv"},
                               "schema": {"pandas": {"sep": ",", "encoding": "utf8"}}}) == {
        "name": "vendor-parent", "created": True}
    client.upsert_pipe({"name": "vendor-daily", "parent": "vendor-parent",
                        "options": {"dir": "dataA", "include": "daily*.csv", "exclude": "backup*"},
                        "schema": {"pandas": {"sep": ";"}}})
    client.upsert_pipe({"name": "vendor-daily-eu", "parent": "vendor-daily", "schema": {"dask": {"x": 1}}})
    assert client.list_pipes() == ["vendor-daily", "vendor-daily-eu", "vendor-parent"]
    assert [p["name"] for p in client.list_pipes(names_only=False)] == client.list_pipes()

    eu = client.pipe("vendor-daily-eu")
    assert eu.settings["options"] == {"dir": "dataA", "include": "daily*.csv", "exclude": "backup*"}
    assert eu.schema == {"pandas": {"sep": ";", "encoding": "utf8"}, "dask": {"x": 1}}, "child wins, merged"
    assert eu.settings["remote"] == "r" and eu.settings["parent"] == "vendor-daily"
    assert eu.dirpath.name == "vendor-daily-eu" and isinstance(eu.dirpath, Path)
    assert client.get_pipe("vendor-daily-eu")["chain"] == ["vendor-daily-eu", "vendor-daily", "vendor-parent"]

    daily = client.pipe("vendor-daily")
    assert daily.update_settings({"options": {"include": "daily*.csv|weekly*.csv"}})["options"] == {
        "dir": "dataA", "include": "daily*.csv|weekly*.csv", "exclude": "backup*"}
    assert daily.settings["options"]["include"] == "daily*.csv|weekly*.csv"
    assert client.upsert_pipe({"name": "vendor-daily", "parent": "vendor-parent"})["created"] is False

    with pytest.raises(InvalidSettingsError) as exc:  # a parent with children stays
        client.delete_pipe("vendor-parent")
    assert exc.value.data["children"] == ["vendor-daily"]
    client.delete_pipe("vendor-daily-eu")
    with pytest.raises(NotFoundError):
        client.pipe("vendor-daily-eu")


def test_bad_settings(client: PipeClient, local_storage: Storage) -> None:
    client.upsert_pipe({"name": "a", "remote": "r"})
    bad = InvalidSettingsError
    cases = [
        ({"name": "x", "parent": "nope"}, NotFoundError, None),
        ({"name": "x", "remote": "nope"}, NotFoundError, None),
        ({"name": "x", "parent": "x"}, InvalidSettingsError, "parent"),
        ({"name": "x"}, InvalidSettingsError, "remote"),
        ({"name": "x", "remote": "r", "options": {"include": "[abc"}}, bad, "options.include"),
        ({"name": "x", "remote": "r", "options": {"exclude": "a||b"}}, bad, "options.exclude"),
        ({"name": "x", "remote": "r", "options": {"dir": "../up"}}, bad, "options.dir"),
        ({"name": "x", "remote": "r", "options": {"inlcude": "*.csv"}}, bad, "options.inlcude"),
        ({"name": "x", "remote": "r", "colour": "blue"}, InvalidSettingsError, "colour"),
        ({"name": "bad name", "remote": "r"}, InvalidSettingsError, "name"),
        ({"name": "x", "remote": "r", "protocol": "s3"}, InvalidSettingsError, "protocol"),
    ]
    for settings, error, field in cases:
        with pytest.raises(error) as exc:
            client.upsert_pipe(settings)
        if field is not None:
            assert exc.value.data["field"] == field, settings
    assert client.list_pipes() == ["a"], "nothing half-made"

    client.upsert_pipe({"name": "b", "parent": "a"})
    with pytest.raises(InvalidSettingsError) as exc:  # a -> b -> a
        client.upsert_pipe({"name": "a", "parent": "b"})
    assert exc.value.code == 1003 and "cycle" in exc.value.message
    with pytest.raises(NotFoundError):
        client.pipe("nope")
    with pytest.raises(InvalidSettingsError):  # a bad pattern in a call, too
        client.pipe("a").pull_preview(include="data[")


def test_self_hosted_pipe(client: PipeClient, s3_storage: Storage) -> None:
    secret = s3_storage.spec["credentials"]["aws_secret_access_key"]
    options = {**s3_storage.spec["options"], "dir": "in"}
    s3_storage.put("in/a.csv", "a")
    assert client.upsert_pipe({"name": "own", "protocol": "s3", "options": options,
                               "credentials": s3_storage.spec["credentials"]})["created"]
    info = client.get_pipe("own")
    assert info["self_hosted_by"] == "own"
    assert set(info["settings"]["credentials"].values()) == {"***"}
    assert client.list_remotes() == ["r"], "the pipe's own remote is hidden"
    pipe = client.pipe("own")
    assert [r["filename"] for r in pipe.pull()] == ["a.csv"]
    client.upsert_pipe({"name": "own-child", "parent": "own", "options": {"include": "*.txt"}})
    assert client.pipe("own-child").scan_remote() == []
    client.update_profile_config({"scan_ttl_s": 60})
    pipe.update_settings({"options": {"include": "*.csv"}})  # credentials omitted: the stored ones stay
    assert client.pipe("own").scan_remote(cached=False) == ["a.csv"]
    mirror = (Path(client.status().home) / "pipes.json").read_text()
    assert secret not in mirror and "own-child" in mirror


def test_profiles_are_isolated(client: PipeClient, local_storage: Storage, tmp_path: Path) -> None:
    local_storage.put("a.csv", "a")
    client.upsert_pipe({"name": "p", "remote": "r"})
    with PipeClient(profile="projectA") as other:
        assert other.list_pipes() == [] and other.list_remotes() == []
        with pytest.raises(NotFoundError):
            other.pipe("p")
        with pytest.raises(NotFoundError):  # remote r is the default profile's
            other.upsert_pipe({"name": "p", "remote": "r"})
        other.update_profile_config({"filerepo": str(tmp_path / "repoA")})
        other.upsert_remote(local_storage.settings("r"))
        other.upsert_pipe({"name": "p", "remote": "r", "options": {"include": "*.txt"}})
        assert other.pipe("p").dirpath == tmp_path / "repoA" / "p"
        assert other.pipe("p").pull() == []
        assert other.get_profile_config()["filerepo"] == str(tmp_path / "repoA")
        assert {"default", "projectA"} <= set(other.list_profiles())
    assert [r["filename"] for r in client.pipe("p").pull()] == ["a.csv"]
    assert client.pipe("p").dirpath == tmp_path / "repo" / "p"
    assert not (tmp_path / "repoA" / "p" / "a.csv").exists()


def test_profile_config_and_move_repo(client: PipeClient, local_storage: Storage, tmp_path: Path) -> None:
    config = client.get_profile_config()
    assert config["scan_ttl_s"] == 300 and config["filerepo"] == str(tmp_path / "repo")
    assert client.update_profile_config({"parallel_files": 2, "scan_ttl_s": 30})["parallel_files"] == 2
    for bad in ({"colour": 1}, {"filerepo": "relative/path"}, {"parallel_files": 0}, {"scan_ttl_s": -1}):
        with pytest.raises(InvalidSettingsError):
            client.update_profile_config(bad)
    local_storage.put("sub/a.csv", "a")
    client.upsert_pipe({"name": "p", "remote": "r"})
    client.pipe("p").pull()
    moved = client.move_repo(tmp_path / "elsewhere")
    assert moved["moved"] and moved["filerepo"] == str(tmp_path / "elsewhere")
    pipe = client.pipe("p")
    assert pipe.dirpath == tmp_path / "elsewhere" / "p"
    assert (pipe.dirpath / "sub" / "a.csv").read_text() == "a"
    assert not (tmp_path / "repo").exists()
    assert pipe.pull() == [] and pipe.push() == [], "moved files are still in sync"


def test_pipe_local_needs_no_daemon(client: PipeClient, local_storage: Storage,
                                    monkeypatch: pytest.MonkeyPatch, pd_env: dict[str, Path]) -> None:
    local_storage.put("a.csv", "a")
    local_storage.put("b.txt", "b")
    client.upsert_pipe({"name": "p", "remote": "r", "schema": {"pandas": {"sep": ","}}})
    client.pipe("p").pull()
    pid = client.status().pid
    client.shutdown()
    client.close()
    wait_gone(pid)

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("PipeLocal must not reach or start the daemon")

    monkeypatch.setattr(autostart, "spawn_daemon", refuse)
    monkeypatch.setattr(SyncConnection, "open", refuse)
    local = PipeLocal("p")
    assert local.files() == ["a.csv", "b.txt"]
    assert local.files(include="*.csv") == ["a.csv"]
    assert local.filepaths(exclude="*.csv") == [local.dirpath / "b.txt"]
    assert local.scan_local(attributes=True)[0]["size"] == 1
    assert local.schema == {"pandas": {"sep": ","}} and local.settings["remote"] == "r"
    extra = Path(pd_env["base"]) / "extra.csv"
    extra.write_text("x")
    assert local.import_file(extra, subdir="imported") == ["imported/extra.csv"]
    assert (local.dirpath / "imported" / "extra.csv").read_text() == "x"
    with pytest.raises(NotFoundError):
        PipeLocal("nope")
    with pytest.raises(NotFoundError):
        PipeLocal("p", profile="projectB")
    assert daemon_pids(pd_env["socket"]) == []
