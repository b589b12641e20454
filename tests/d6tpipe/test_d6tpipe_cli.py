"""d6tpipe's command line under pipedaemon, with d6tpipe's option placement, against a real daemon
and S3 (moto): pull/push --pipe X --profile P [--preview], create, list, scan, profiles."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from pipedaemon.cli import main_group
from pipedaemon_sdk import PipeClient
from tests.support.pipes import Storage


def run(*args: str) -> Result:
    return CliRunner().invoke(main_group, list(args), catch_exceptions=False)


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.output


def test_d6tpipe_commands(client: PipeClient, s3_storage: Storage, tmp_path: Path) -> None:
    s3_storage.put("a.csv", "a")
    s3_storage.put("b.txt", "b")
    other = PipeClient(profile="projB")
    other.update_profile_config({"filerepo": str(tmp_path / "projB")})
    other.upsert_remote(s3_storage.settings("r"))
    # d6tpipe create --pipe X: here it names its storage; a bare name is a clear error
    bare = run("create", "--pipe", "vendor", "--profile", "projB")
    assert bare.exit_code == 1 and "needs a `remote`" in bare.output
    created = json.loads(ok("create", "--pipe", "vendor", "--remote", "r", "--profile", "projB"))
    assert created["name"] == "vendor" and created["remote"] == "r"
    again = json.loads(ok("create", "--pipe", "vendor", "--profile", "projB"))  # it exists: shown
    assert again["remote"] == "r"
    assert json.loads(ok("list", "remote", "--profile", "projB")) == ["vendor"]
    assert json.loads(ok("list", "remote")) == []  # the default profile has none
    assert json.loads(ok("list", "local", "--profile", "projB")) == []
    # d6tpipe scan remote --pipe X [--no-cache]; pull --pipe X --profile P [--preview]
    assert json.loads(ok("scan", "remote", "--pipe", "vendor", "--profile", "projB", "--no-cache")) == [
        "a.csv", "b.txt"]
    preview = ok("pull", "--pipe", "vendor", "--profile", "projB", "--preview")
    assert preview.startswith("would pull 2 file(s)")
    assert "pulled 2 file(s)" in ok("pull", "--pipe", "vendor", "--profile", "projB")
    assert (tmp_path / "projB" / "vendor" / "a.csv").read_text() == "a"
    assert json.loads(ok("list", "local", "--profile", "projB")) == ["vendor"]
    assert json.loads(ok("scan", "local", "--pipe", "vendor", "--profile", "projB")) == ["a.csv", "b.txt"]
    (tmp_path / "projB" / "vendor" / "c.csv").write_text("c")
    pushing = ok("push", "--pipe", "vendor", "--profile", "projB", "--preview")
    assert pushing.startswith("would push 1 file(s)")
    assert "pushed 1 file(s)" in ok("push", "--pipe", "vendor", "--profile", "projB")
    assert "c.csv" in s3_storage.names()
    # profiles list|dir
    profiles = json.loads(ok("profiles", "list"))
    assert profiles["projB"]["filerepo"] == str(tmp_path / "projB")
    assert ok("profiles", "dir", "--profile", "projB").strip() == f"Local repo: {tmp_path / 'projB'}"
    # the group's --profile (pipedaemon's own placement) still works
    assert json.loads(ok("--profile", "projB", "list", "remote")) == ["vendor"]
    missing = run("scan", "remote", "--pipe", "nope", "--profile", "projB")
    assert missing.exit_code == 1 and "code 1001" in missing.output and "Traceback" not in missing.output
    other.close()
