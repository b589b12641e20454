"""The pipe commands of the CLI against a real daemon: upsert from files, pull/push, files, orphans."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner, Result

from pipedaemon.cli import main_group
from pipedaemon_sdk import PipeClient
from tests.support.pipes import Storage


def run(*args: str) -> Result:
    return CliRunner().invoke(main_group, list(args), catch_exceptions=False)


def run_json(*args: str) -> object:
    result = run("--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_pipe_commands(client: PipeClient, local_storage: Storage, tmp_path: Path) -> None:
    local_storage.put("README.md", "# About this data\n")
    local_storage.put("a.csv", "a")
    settings = tmp_path / "pipes.yaml"
    settings.write_text(yaml.safe_dump([{"name": "p", "remote": "r", "schema": {"pandas": {"sep": ","}}},
                                        {"name": "child", "parent": "p", "options": {"include": "*.csv"}}]))
    out = run("pipe", "upsert", "--file", str(settings))
    assert out.exit_code == 0 and "created pipe p" in out.output and "created pipe child" in out.output
    assert run_json("pipe", "list") == ["child", "p"]
    assert "child" in run("pipe", "list", "--long").output
    shown = run_json("pipe", "show", "child")
    assert shown["settings"]["schema"] == {"pandas": {"sep": ","}} and shown["parent"] == "p"

    preview = run("pull", "--pipe", "p", "--preview")
    assert preview.exit_code == 0 and preview.output.startswith("would pull 2 file(s)")
    first = run("pull", "--pipe", "p")
    assert first.exit_code == 0 and "pulled 2 file(s)" in first.output
    assert "--- README.md ---" in first.output and "# About this data" in first.output
    again = run_json("pull", "--pipe", "p", "--no-cache")
    assert again["files"] == [] and again["summary"]["moved"] == 0

    local = client.pipe("p").dirpath
    (local / "b.csv").write_text("b")
    (local / "c.txt").write_text("c")
    pushed = run_json("push", "--pipe", "p", "--include", "*.csv")
    assert [r["filename"] for r in pushed["files"]] == ["b.csv"]
    listed = run_json("files", "--pipe", "p")
    assert [r["filename"] for r in listed] == ["README.md", "a.csv", "b.csv", "c.txt"]
    assert [r["filename"] for r in run_json("files", "--pipe", "child", "--remote")] == ["a.csv", "b.csv"]
    assert "a.csv" in run("files", "--pipe", "p", "--remote", "--sortby", "size").output

    orphans = run_json("orphans", "--pipe", "p")
    assert [(r["filename"], r["action"]) for r in orphans] == [("c.txt", "would delete")]
    assert (local / "c.txt").exists()
    deleted = run_json("orphans", "--pipe", "p", "--delete")
    assert [(r["filename"], r["action"]) for r in deleted] == [("c.txt", "deleted")]
    assert not (local / "c.txt").exists()

    (local / "a.csv").write_text("local edit")
    local_storage.put("a.csv", "remote edit, longer")
    conflict = run("pull", "--pipe", "p", "--no-cache")
    assert conflict.exit_code == 1 and "[code 1006]" in conflict.output
    kept = run("pull", "--pipe", "p", "--merge-mode", "keep")
    assert kept.exit_code == 0 and "1 kept" in kept.output and (local / "a.csv").read_text() == "local edit"
    mode_all = run_json("pull", "--pipe", "p", "--mode", "all", "--nrecent", "1", "--file", "b.csv")
    assert [r["filename"] for r in mode_all["files"]] == ["b.csv"]

    assert run_json("pipe", "config", "--set", "scan_ttl_s=10")["scan_ttl_s"] == 10
    assert run("pipe", "rm", "p").exit_code == 1, "p still has a child"
    assert run("pipe", "rm", "child").exit_code == 0 and run_json("pipe", "list") == ["p"]
    bad = run("pull", "--pipe", "nope")
    assert bad.exit_code == 1 and "[code 1001]" in bad.output


def test_upsert_with_credentials_file(client: PipeClient, s3_storage: Storage, tmp_path: Path) -> None:
    secret = s3_storage.spec["credentials"]["aws_secret_access_key"]
    settings = tmp_path / "pipe.json"
    settings.write_text(json.dumps({"vendor": {"name": "vendor", "protocol": "s3",
                                               "options": s3_storage.spec["options"]}}))
    creds = tmp_path / ".creds.yaml"
    creds.write_text(yaml.safe_dump({"vendor": s3_storage.spec["credentials"]}))
    out = run("pipe", "upsert", "--file", str(settings), "--name", "vendor", "--credentials-file", str(creds))
    assert out.exit_code == 0, out.output
    s3_storage.put("x.csv", "x")
    assert [r["filename"] for r in run_json("pull", "--pipe", "vendor")["files"]] == ["x.csv"]
    shown = run("pipe", "show", "vendor").output
    assert secret not in shown and "***" in shown
