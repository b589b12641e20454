"""The storage CLI as users run it: ``python -m pipedaemon ...`` in a subprocess, daemon auto-started."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipedaemon_sdk import DaemonError, PipeClient
from pipedaemon_sdk.errors import DaemonConnectionError
from tests.servers import BACKENDS
from tests.support.storage import get_spec


def pd(*args: str, cwd: Path | None = None, input: str | None = None,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; no controlling terminal, so prompts read stdin and nothing looks like a TTY."""
    return subprocess.run([sys.executable, "-m", "pipedaemon", *args], cwd=cwd, input=input, text=True,
                          capture_output=True, timeout=180, env={**os.environ, **(env or {})},
                          start_new_session=True)


def ok(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = pd(*args, **kw)
    assert res.returncode == 0, f"{args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def pd_json(*args: str, **kw: Any) -> Any:
    return json.loads(ok("--json", *args, **kw).stdout)


@pytest.fixture(autouse=True)
def stop_daemon(pd_env: dict[str, Path]) -> Iterator[None]:
    """The CLI auto-starts this test's daemon: stop it when the test ends."""
    yield
    with contextlib.suppress(DaemonError, DaemonConnectionError, OSError):
        with PipeClient(auto_start=False) as c:
            c.shutdown()


@pytest.fixture(params=BACKENDS)
def cli_spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    return get_spec(request, request.param)


def add_args(name: str, spec: dict[str, Any], creds_file: Path | None) -> list[str]:
    args = ["remote", "add", name, "--protocol", spec["protocol"]]
    for key, value in spec["options"].items():
        args += ["-o", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    if creds_file is not None:
        args += ["--credentials-file", str(creds_file)]
    return args


def secret_values(spec: dict[str, Any]) -> list[str]:
    return [v for k, v in spec["credentials"].items() if k != "private_key"]  # a key *path* is no secret


def register(name: str, spec: dict[str, Any], tmp_path: Path, fmt: str = "json") -> None:
    creds_file = None
    if spec["credentials"]:
        creds_file = tmp_path / f"{name}-creds.{fmt}"
        text = json.dumps(spec["credentials"]) if fmt == "json" else yaml.safe_dump(spec["credentials"])
        creds_file.write_text(text)
    res = ok(*add_args(name, spec, creds_file))
    assert f"added remote {name}" in res.stdout


# -- remotes -------------------------------------------------------------------------------------
def test_remote_add_list_show_check_rm(cli_spec: dict[str, Any], tmp_path: Path) -> None:
    register("st", cli_spec, tmp_path, fmt="yaml" if cli_spec["protocol"] == "sftp" else "json")
    listed = ok("remote", "list").stdout
    assert "st" in listed and cli_spec["protocol"] in listed
    shown = ok("remote", "show", "st").stdout
    assert cli_spec["root"] in shown
    secrets = secret_values(cli_spec)
    for s in secrets:
        assert s not in shown and s not in listed
    as_json = pd_json("remote", "show", "st")
    assert as_json["name"] == "st" and as_json["root"] == cli_spec["root"]
    assert all(v == "***" for v in as_json["credentials"].values())
    assert set(as_json["credentials"]) == set(cli_spec["credentials"])
    if secrets:
        assert "***" in shown
    [row] = pd_json("remote", "list")
    assert row["name"] == "st"
    check = ok("remote", "check", "st").stdout
    assert "ok" in check and "write yes" in check
    assert pd_json("remote", "check", "st", "--no-write-probe")["can_write"] is None
    assert "removed remote st" in ok("remote", "rm", "st").stdout
    gone = pd("remote", "show", "st")
    assert gone.returncode == 1 and "no such remote" in gone.stderr and "1001" in gone.stderr


def test_credentials_from_env_and_prompt(s3_spec: dict[str, Any]) -> None:
    creds = s3_spec["credentials"]
    env = {"PD_S3_READ_AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
           "PD_S3_READ_AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
           "PD_S3_WRITE_AWS_ACCESS_KEY_ID": creds["aws_access_key_id"]}
    args = add_args("s3e", s3_spec, None)
    res = ok(*args, "--credentials-env", "PD_S3_", "--ask", "write.aws_secret_access_key",
             input=creds["aws_secret_access_key"] + "\n", env=env)
    assert creds["aws_secret_access_key"] not in res.stdout  # the prompt did not echo it
    shown = pd_json("remote", "show", "s3e")["credentials"]
    assert shown == {mode: {"aws_access_key_id": "***", "aws_secret_access_key": "***"}
                     for mode in ("read", "write")}
    assert pd_json("remote", "check", "s3e")["ok"] is True
    # Updating options without any credential source keeps the stored credentials.
    ok(*args)
    assert pd_json("remote", "show", "s3e")["credentials"] == shown
    assert pd_json("remote", "check", "s3e")["ok"] is True


def test_env_prefix_without_variables_is_refused(local_spec: dict[str, Any]) -> None:
    res = pd(*add_args("l", local_spec, None), "--credentials-env", "PD_NOTHING_HERE_")
    assert res.returncode == 2 and "PD_NOTHING_HERE_" in res.stderr


@pytest.mark.parametrize("field", ["aws_secret_access_key", "aws_access_key_id", "password", "passphrase",
                                   "private_key", "PASSWORD", "credentials"])
def test_secret_on_command_line_refused(field: str, pd_env: dict[str, Path]) -> None:
    res = pd("remote", "add", "s", "--protocol", "ftp", "--location", "127.0.0.1", "-o", f"{field}=hunter22")
    assert res.returncode == 2
    assert "never on the command line" in res.stderr and "--credentials-file" in res.stderr
    assert "hunter22" not in res.stderr + res.stdout
    assert not pd_env["socket"].exists()  # refused before anything reached the daemon


def test_bad_settings_exit_nonzero(local_spec: dict[str, Any]) -> None:
    res = pd("remote", "add", "x", "--protocol", "gopher")
    assert res.returncode == 1 and "unknown protocol" in res.stderr and "1003" in res.stderr
    res = pd("remote", "add", "x", "--protocol", "sftp", "--location", "h", "-o", "port=abc")
    assert res.returncode == 1 and "options.port" in res.stderr
    res = pd("--json", "remote", "list")
    assert res.returncode == 0 and json.loads(res.stdout) == []


# -- objects -------------------------------------------------------------------------------------
def test_ls_stat_cp_rm(cli_spec: dict[str, Any], tmp_path: Path) -> None:
    register("st", cli_spec, tmp_path)
    src = tmp_path / "report 1.csv"
    src.write_bytes(os.urandom(70_000))
    out = ok("cp", str(src), "st:dir/").stdout
    assert "st:dir/report 1.csv" in out
    ok("cp", str(src), "st:dir/sub/renamed.csv")
    assert ok("ls", "st:").stdout.split("\n")[0] == "dir/"
    assert ok("ls", "st:dir").stdout.splitlines() == ["report 1.csv", "sub/"]
    assert ok("ls", "-r", "st:dir/").stdout.splitlines() == ["report 1.csv", "sub/renamed.csv"]
    long = ok("ls", "-r", "--long", "st:").stdout
    assert "70000" in long and "dir/sub/renamed.csv" in long
    listed = pd_json("ls", "-r", "st:")
    assert {e["name"]: e["size"] for e in listed} == {"dir/report 1.csv": 70_000,
                                                      "dir/sub/renamed.csv": 70_000}
    assert ok("ls", "st:dir/report 1.csv").stdout.strip() == "report 1.csv"
    st = pd_json("stat", "st:dir/report 1.csv")
    assert st["size"] == 70_000 and st["name"] == "dir/report 1.csv"
    assert "size:     70000" in ok("stat", "st:dir/report 1.csv").stdout

    # Downloads: into a folder (keeps the name), to a file path, and remote -> remote.
    into = tmp_path / "into"
    into.mkdir()
    ok("cp", "st:dir/report 1.csv", f"{into}/")
    assert (into / "report 1.csv").read_bytes() == src.read_bytes()
    got = pd_json("cp", "st:dir/sub/renamed.csv", str(tmp_path / "named.csv"))
    assert got["to"] == str(tmp_path / "named.csv") and got["size"] == 70_000
    assert (tmp_path / "named.csv").read_bytes() == src.read_bytes()
    ok("cp", "st:dir/report 1.csv", "st:copies/")
    assert pd_json("stat", "st:copies/report 1.csv")["size"] == 70_000

    # rm: refused without --yes when nobody can be asked; all-or-nothing on a missing name.
    res = pd("rm", "st:copies/report 1.csv")
    assert res.returncode == 2 and "--yes" in res.stderr
    assert pd_json("stat", "st:copies/report 1.csv")["size"] == 70_000
    res = pd("rm", "--yes", "st:copies/report 1.csv", "st:missing.csv")
    assert res.returncode == 1 and "nothing was deleted" in res.stderr
    assert pd_json("rm", "--yes", "st:copies/report 1.csv", "st:dir/sub/renamed.csv") == {
        "deleted": ["st:copies/report 1.csv", "st:dir/sub/renamed.csv"]}
    assert [e["name"] for e in pd_json("ls", "-r", "st:")] == ["dir/report 1.csv"]
    missing = pd("stat", "st:copies/report 1.csv")
    assert missing.returncode == 1 and "1001" in missing.stderr


def test_cp_between_remotes(local_spec: dict[str, Any], s3_spec: dict[str, Any], tmp_path: Path) -> None:
    register("loc", local_spec, tmp_path)
    register("s3", s3_spec, tmp_path)
    (tmp_path / "a.bin").write_bytes(b"abc" * 1000)
    ok("cp", str(tmp_path / "a.bin"), "loc:a.bin")
    res = pd_json("cp", "loc:a.bin", "s3:in/")
    assert res["to"] == "s3:in/a.bin" and res["size"] == 3000
    ok("cp", "s3:in/a.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == b"abc" * 1000


def test_local_paths_with_colons(local_spec: dict[str, Any], tmp_path: Path) -> None:
    register("loc", local_spec, tmp_path)
    (tmp_path / "a:b.txt").write_text("colon")
    ok("cp", "./a:b.txt", "loc:x.txt", cwd=tmp_path)
    ok("cp", "loc:x.txt", "./c:d.txt", cwd=tmp_path)
    assert (tmp_path / "c:d.txt").read_text() == "colon"
    ok("cp", "loc:x.txt", str(tmp_path / "e:f.txt"))
    assert (tmp_path / "e:f.txt").read_text() == "colon"
    both_local = pd("cp", "./a:b.txt", "./z.txt", cwd=tmp_path)
    assert both_local.returncode == 2 and "REMOTE:PATH" in both_local.stderr


def test_errors_exit_nonzero(local_spec: dict[str, Any], tmp_path: Path) -> None:
    res = pd("ls", "nosuch:dir")
    assert res.returncode == 1 and "no such remote" in res.stderr
    register("loc", local_spec, tmp_path)
    res = pd("cp", "loc:../../etc/passwd", str(tmp_path / "p"))
    assert res.returncode == 1 and "1010" in res.stderr
    assert not (tmp_path / "p").exists()
    res = pd("cp", str(tmp_path / "nope.txt"), "loc:x")
    assert res.returncode == 2
    res = pd("ls", "loc:missing")
    assert res.returncode == 1 and "1001" in res.stderr
    res = pd("--json", "remote", "check", "nosuch")
    assert res.returncode == 1


# -- on a terminal: rm asks, cp draws a bar ----------------------------------------------------------
def run_tty(args: list[str], answer: bytes = b"", timeout: float = 120.0) -> tuple[int, str]:
    """Run the CLI with stdin/stdout/stderr on a pseudo-terminal; its exit status and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pipedaemon", *args], stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    if answer:
        os.write(master, answer)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_rm_asks_on_a_terminal(local_spec: dict[str, Any], tmp_path: Path) -> None:
    register("loc", local_spec, tmp_path)
    (tmp_path / "k.txt").write_text("keep")
    ok("cp", str(tmp_path / "k.txt"), "loc:k.txt")
    status, out = run_tty(["rm", "loc:k.txt"], b"n\n")
    assert status == 1 and "delete 1 object" in out and "Aborted" in out
    assert pd_json("stat", "loc:k.txt")["size"] == 4
    status, out = run_tty(["rm", "loc:k.txt"], b"y\n")
    assert status == 0 and "deleted loc:k.txt" in out
    assert pd("stat", "loc:k.txt").returncode == 1


def test_progress_bar_on_a_terminal(local_spec: dict[str, Any], tmp_path: Path) -> None:
    register("loc", local_spec, tmp_path)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    status, out = run_tty(["cp", str(big), "loc:big.bin"])
    assert status == 0, out
    assert "%" in out and "big.bin" in out and "\r" in out  # a bar redrawn in place
    piped = ok("cp", "loc:big.bin", str(tmp_path / "again.bin"))
    assert "%" not in piped.stderr  # no bar when nobody watches
