"""What a person meets at the terminal (issue 18), part 1: safety and failing cleanly.

One daemon per home; a missing local root is 1001 and never made; profile names checked
by the daemon; `stop` while a `cp` follows a job; every `serve` start-up failure is one
line, a non-zero exit and nothing left running; no CLI command shows a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipedaemon.cli import main_group
from pipedaemon_sdk import DaemonConnectionError, InvalidSettingsError, NotFoundError, PipeClient
from tests.servers import BACKENDS
from tests.support.spine import ACTIVATE, daemon_pids, kill9, pd_cmd, stop_all, wait_gone, wait_socket
from tests.support.storage import get_spec, settings_of
from tests.support.terminal import add_local, pd, running_jobs, slow_daemon, wait_for


# -- one daemon per home ---------------------------------------------------------------------------
def test_second_socket_for_the_same_home_is_refused_and_named(pd_env: dict[str, Path]) -> None:
    with PipeClient() as c:
        first = c.status().pid
    other = pd_env["base"] / "run2" / "other.sock"
    try:
        with pytest.raises(DaemonConnectionError, match=str(pd_env["socket"])) as err:
            PipeClient(socket_path=other).connect()
        assert f"PIPEDAEMON_SOCKET={pd_env['socket']}" in str(err.value)
        assert daemon_pids(other) == []
        served = subprocess.run(pd_cmd("serve", "--socket", str(other)), capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL)
        assert served.returncode == 1
        assert "another daemon already serves" in served.stderr and str(pd_env["socket"]) in served.stderr
        assert "Traceback" not in served.stderr
        off = pd("--socket", str(other), "status")
        assert off.returncode == 3 and str(pd_env["socket"]) in off.stderr
    finally:
        stop_all(other)
    with PipeClient(auto_start=False) as c:
        assert c.status().pid == first


# -- a local remote whose folder is missing -----------------------------------------------------------
def test_missing_local_root_is_1001_and_never_made(pd_env: dict[str, Path], tmp_path: Path) -> None:
    gone = tmp_path / "nas" / "share"
    add_local("nas", gone)
    src = tmp_path / "a.txt"
    src.write_text("data")
    with PipeClient() as c:
        r = c.check_remote("nas")
        assert not r["ok"] and r["error"]["code"] == 1001 and r["error"]["data"]["path"] == str(gone)
        with pytest.raises(NotFoundError) as err:
            c.call("object.list", {"remote": "nas", "prefix": ""})
        assert err.value.data["path"] == str(gone)
        with pytest.raises(NotFoundError):
            c.upload(src, remote="nas", key="a.txt")
    for args in (["ls", "nas:"], ["cp", str(src), "nas:a.txt"], ["remote", "check", "nas"]):
        out = pd(*args)
        said = out.stdout + out.stderr  # remote check reports on stdout
        assert out.returncode == 1 and "1001" in said and str(gone) in said, (args, said)
    assert not gone.exists() and not gone.parent.exists()
    # The documented option makes it.
    add_local("nas", gone, "-o", "create_root=true")
    with PipeClient() as c:
        assert c.upload(src, remote="nas", key="a.txt").size == 4
    assert (gone / "a.txt").read_text() == "data"


def test_pipe_on_a_missing_local_root_is_1001(pd_env: dict[str, Path], tmp_path: Path) -> None:
    gone = tmp_path / "unmounted"
    add_local("nas", gone)
    with PipeClient() as c:
        c.update_profile_config({"filerepo": str(tmp_path / "repo")})
        c.upsert_pipe({"name": "p", "remote": "nas"})
        (tmp_path / "repo" / "p").mkdir(parents=True)
        (tmp_path / "repo" / "p" / "f.csv").write_text("1,2\n")
    for verb in ("pull", "push"):
        out = pd(verb, "--pipe", "p")
        assert out.returncode == 1 and "1001" in out.stderr, out.stderr
    assert not gone.exists()


# -- profile names --------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["default/pipes", "", "x y", "-x"])
def test_profile_names_are_checked_by_the_daemon(profile: str) -> None:
    with PipeClient(profile=profile) as c:
        for method, params in (("remote.list", {}), ("pipe.list", {}), ("remote.delete", {"name": "x"})):
            with pytest.raises(InvalidSettingsError) as err:
                c.call(method, {"profile": profile, **params})
            assert err.value.data == {"field": "profile"}
    out = pd("--profile", profile, "remote", "list")
    assert out.returncode == 1 and "invalid profile name" in out.stderr


# -- `pipedaemon stop` while a cp follows a job ---------------------------------------------------------
def test_stop_during_cp_ends_the_cp_without_a_new_daemon(pd_env: dict[str, Path], tmp_path: Path) -> None:
    add_local("loc", tmp_path)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 << 20))
    slow_daemon(256 << 10)
    cp = subprocess.Popen(pd_cmd("cp", str(src), "loc:copy.bin"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    wait_for(running_jobs, what="the upload to run")
    stopped = pd("stop")
    assert stopped.returncode == 0, stopped.stderr
    _, err = cp.communicate(timeout=60)
    assert cp.returncode == 3
    assert "asked to stop" in err and "not starting another daemon" in err
    assert daemon_pids(pd_env["socket"]) == []


def test_cp_after_the_daemon_was_killed_follows_the_resumed_job(pd_env: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    add_local("loc", tmp_path / "dst", "-o", "create_root=true")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 << 20))
    slow_daemon(256 << 10)
    cp = subprocess.Popen(pd_cmd("cp", str(src), "loc:copy.bin"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    job = wait_for(running_jobs, what="the upload to run")[0]
    with PipeClient(auto_start=False) as c:
        pid = c.status().pid
    kill9(pid)
    _, err = cp.communicate(timeout=120)
    assert cp.returncode == 0, err
    assert f"lost the daemon while following job {job.id}; starting it again" in err
    assert (tmp_path / "dst" / "copy.bin").read_bytes() == src.read_bytes()
    log = (pd_env["home"] / "daemon.log").read_text()
    assert f"resuming job {job.id}" in log and f"job {job.id} succeeded" in log


# -- serve start-up failures: one line, exit 1, nothing left running ------------------------------------
def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(pd_cmd("serve", *args), capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def _one_clean_line(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line or line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def test_serve_socket_path_too_long(pd_env: dict[str, Path]) -> None:
    long = pd_env["base"] / ("x" * 120) / "s.sock"
    _one_clean_line(_serve(dict(os.environ), "--socket", str(long)), "more than a Unix socket takes")
    assert daemon_pids(long) == []


def test_serve_listen_fds_not_a_socket(pd_env: dict[str, Path], tmp_path: Path) -> None:
    f = tmp_path / "not-a-socket"
    f.write_text("")
    fd = os.open(f, os.O_RDONLY)
    try:  # as systemd would pass it, but a plain file on fd 3
        out = subprocess.run([sys.executable, "-c", ACTIVATE, "-m", "pipedaemon", "serve"],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PD_TEST_LISTEN_FD=str(fd)),
                             stdin=subprocess.DEVNULL, pass_fds=(fd,))
    finally:
        os.close(fd)
    _one_clean_line(out, "not a listening socket")
    assert not pd_env["socket"].exists()


def test_serve_home_is_a_file(pd_env: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home-file"
    home.write_text("oops")
    env = dict(os.environ, PIPEDAEMON_HOME=str(home))
    _one_clean_line(_serve(env), "is not a folder")
    auto = pd("remote", "list", env=env)
    assert auto.returncode == 3 and "not a folder" in auto.stderr and "Traceback" not in auto.stderr


def test_damaged_state_is_refused_then_reset_when_asked(pd_env: dict[str, Path]) -> None:
    home = pd_env["home"]
    home.mkdir(parents=True)
    (home / "state.db").write_bytes(b"this is no sqlite database" * 200)
    _one_clean_line(_serve(dict(os.environ)), "state database", "is damaged", "--reset-state")
    assert (home / "state.db").exists()
    auto = pd("remote", "list")
    assert auto.returncode == 3 and "is damaged" in auto.stderr and "--reset-state" in auto.stderr
    proc = subprocess.Popen(pd_cmd("serve", "--reset-state"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_socket(pd_env["socket"], proc=proc)
        with PipeClient(auto_start=False) as c:
            assert c.list_remotes() == []
        assert [p.name for p in home.glob("state.db.damaged-*")]
    finally:
        proc.terminate()
        wait_gone(proc.pid)


def test_serve_fails_cleanly_with_the_database_open(pd_env: dict[str, Path]) -> None:
    """A failure after the state is open (here: the socket's place is a folder) must not hang."""
    pd_env["socket"].mkdir(parents=True)
    _one_clean_line(_serve(dict(os.environ)), str(pd_env["socket"]), "is not a socket")
    assert daemon_pids(pd_env["socket"]) == []


# -- no traceback from any command ---------------------------------------------------------------------
HOSTILE = ["", " ", "x y", "../../etc/passwd", ":", "nope:", "-", "é" * 300, "a\tb", "--", "%s%n"]
# serve runs a daemon; log and watch follow until interrupted (the terminal and schedule tests cover them)
SKIP = {"serve", "log", "watch"}


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        if name in SKIP:
            continue
        if hasattr(cmd, "commands"):
            out += _commands(cmd, (*prefix, name))
        else:
            out.append(((*prefix, name), cmd))
    return out


def _hostile_args(cmd: Any, value: str) -> list[str]:
    args: list[str] = []
    for p in cmd.params:
        if p.param_type_name == "argument":
            args += [value] * (1 if p.nargs == 1 else 2)
        elif p.required:
            args += [p.opts[0], value]
    return args


def test_every_command_with_hostile_arguments_shows_no_traceback(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative paths (move-repo, hash) land in the test's folder; units in its own config folder.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    runner = CliRunner()
    with PipeClient():
        pass  # a daemon runs: the commands reach it
    ran = 0
    for path, cmd in _commands(main_group):
        for value in HOSTILE:
            for extra in ([], ["--json"]):
                args = [*extra, *path, *_hostile_args(cmd, value)]
                res = runner.invoke(main_group, args, catch_exceptions=True)
                ran += 1
                assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.exception)
                assert "Traceback" not in res.output, (args, res.output)
    assert ran > 200


@pytest.mark.parametrize("content, suffix, needle", [
    ("{not json", ".json", "is not valid JSON"),
    ("a: [1, 2\nb: {", ".yaml", "is not valid YAML at line"),
    ("- 1\n- 2\n", ".yaml", "must hold a pipe's settings"),
    ("just text", ".yaml", "must hold a pipe's settings"),
    (json.dumps({"a": {"remote": "r"}, "b": {"remote": "r"}}), ".json", "pick one with --name"),
])
def test_pipe_upsert_bad_files_name_the_problem(tmp_path: Path, content: str, suffix: str,
                                                needle: str) -> None:
    f = tmp_path / f"pipes{suffix}"
    f.write_text(content)
    out = pd("pipe", "upsert", "--file", str(f))
    assert out.returncode == 2 and needle in out.stderr and str(f) in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_pipe_upsert_name_in_a_list_file(tmp_path: Path) -> None:
    f = tmp_path / "pipes.yaml"
    f.write_text("- name: a\n  remote: r\n")
    out = pd("pipe", "upsert", "--file", str(f), "--name", "a")
    assert out.returncode == 2 and "does not map names" in out.stderr and str(f) in out.stderr


# A remotepath on a server: the local root is the tests above, S3 has a bucket instead.
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("local", "s3")])
def test_missing_root_on_a_server_is_1001_and_never_made(request: pytest.FixtureRequest, backend: str,
                                                         tmp_path: Path) -> None:
    spec = get_spec(request, backend)
    root = spec["options"]["remotepath"].rstrip("/") + "-missing/"
    src = tmp_path / "a.txt"
    src.write_text("data")
    with PipeClient(request_timeout_s=60) as c:
        c.upsert_remote(settings_of(spec, "srv", options={**spec["options"], "remotepath": root}))
        with pytest.raises(NotFoundError) as err:
            c.upload(src, remote="srv", key="sub/a.txt")
        assert err.value.data["field"] == "remotepath" and err.value.data["path"].endswith(root.rstrip("/"))
        assert c.check_remote("srv")["error"]["code"] == 1001
        made = {**spec["options"], "remotepath": root, "create_root": True}
        c.upsert_remote(settings_of(spec, "srv", options=made))
        assert c.upload(src, remote="srv", key="sub/a.txt").size == 4
        c.upsert_remote(settings_of(spec, "srv", options={**spec["options"], "remotepath": root}))
        assert c.upload(src, remote="srv", key="other/b.txt").size == 4  # below an existing root: made
