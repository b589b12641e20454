"""What a person meets at the terminal (issue 18), part 2: progress at 80 columns on a
pseudo-terminal, Ctrl-C, --detach, the log, --json errors, doctor, completion, units."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipedaemon.systemd import unit_texts
from pipedaemon_sdk import PipeClient
from tests.support.spine import ACTIVATE, bind_listener, daemon_pids, pd_cmd, start_serve, wait_socket
from tests.support.terminal import Tty, add_local, pd, running_jobs, slow_daemon, wait_for

ETA = re.compile(r"\d+:\d\d\b")
RATE = re.compile(r"\d+(\.\d)? [kMG]?B/s")


def _fits(t: Tty, cols: int = 80) -> None:
    """Every progress line fits the terminal (a result line naming a long path may wrap)."""
    long = [line for line in t.screen_lines() if len(line) > cols and "━" in line]
    assert not long, long[:3]


# -- progress ---------------------------------------------------------------------------------------
def test_cp_progress_fits_80_columns_with_eta(tmp_path: Path) -> None:
    add_local("loc", tmp_path / "r", "-o", "create_root=true")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    slow_daemon(2 << 20)
    t = Tty(["cp", str(src), "loc:big.bin"]).start()
    assert t.finish() == 0, t.text
    _fits(t)
    drawn = [line for line in t.screen_lines() if "━" in line]
    assert drawn and "100%" in drawn[-1] and "big.bin" in drawn[-1]
    assert ETA.search(drawn[-1]), drawn[-1]
    # One unit for sizes and rates: decimal MB, as ProgressEvent.rate_mbps (rate_bps / 1e6).
    assert "3.1/3.1 MB" in drawn[-1] and "iB" not in drawn[-1], drawn[-1]
    assert any(RATE.search(line) for line in drawn), drawn[-3:]
    assert not any("iB/s" in line for line in t.screen_lines())
    assert any(line.endswith("loc:big.bin (3.1 MB)") for line in t.screen_lines())


def test_push_many_files_one_line_per_running_file(tmp_path: Path) -> None:
    add_local("loc", tmp_path / "r", "-o", "create_root=true")
    repo = tmp_path / "repo"
    (repo / "p").mkdir(parents=True)
    for i in range(6):
        (repo / "p" / f"a-file-with-a-long-name-{i}.bin").write_bytes(os.urandom(300_000))
    with PipeClient() as c:
        c.update_profile_config({"filerepo": str(repo), "parallel_files": 3})
        c.upsert_pipe({"name": "p", "remote": "loc"})
    slow_daemon(1 << 20)
    t = Tty(["push", "--pipe", "p"]).start()
    assert t.finish() == 0, t.text
    _fits(t)
    lines = t.screen_lines()
    counters = {m for line in lines for m in re.findall(r"(\d+)/6 files", line)}
    assert "6" in counters and all(int(n) <= 6 for n in counters)  # files finished, never 7/6
    assert any(line.startswith("  …") and "-name-" in line for line in lines), "a line per running file"
    drawn = [line for line in lines if "━" in line]
    assert drawn[-1].startswith("push p 6/6 files") and "100%" in drawn[-1]  # the final state stays
    assert any(line.startswith("pushed 6 file(s)") for line in lines)


# -- Ctrl-C and --detach ------------------------------------------------------------------------------
def test_ctrl_c_cancels_the_cp_and_exits_130(tmp_path: Path) -> None:
    dest = tmp_path / "r"
    add_local("loc", dest, "-o", "create_root=true")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 << 20))
    slow_daemon(256 << 10)
    t = Tty(["cp", str(src), "loc:big.bin"]).start()
    t.until("%")
    job = running_jobs()[0]
    t.sigint()
    assert t.finish() == 130, t.text
    assert f"cancelled job {job.id}" in t.text and "Aborted" not in t.text
    with PipeClient() as c:
        assert c.job(job.id).info.state == "cancelled"
    assert list(dest.rglob("*")) == [], "no file, no temporary file left"


def test_detach_leaves_the_job_running(tmp_path: Path) -> None:
    add_local("loc", tmp_path / "r", "-o", "create_root=true")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(1 << 20))
    slow_daemon(256 << 10)
    out = pd("cp", "--detach", str(src), "loc:big.bin")
    assert out.returncode == 0, out.stderr
    job_id = re.search(r"started job ([0-9a-f]{16})", out.stdout)[1]  # type: ignore[index]
    assert "pipedaemon jobs --watch" in out.stdout
    t = Tty(["jobs", "--watch"]).start()
    assert t.finish() == 0, t.text
    _fits(t)
    summary = [line for line in t.screen_lines() if line.startswith(job_id)]
    assert summary and "succeeded" in summary[-1]  # the job's final line stays after --watch
    assert (tmp_path / "r" / "big.bin").read_bytes() == src.read_bytes()


def test_jobs_watch_json_is_one_object_per_line(tmp_path: Path) -> None:
    add_local("loc", tmp_path / "r", "-o", "create_root=true")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(1 << 20))
    slow_daemon(256 << 10)
    job_id = json.loads(pd("--json", "cp", "--detach", str(src), "loc:x").stdout)["job_id"]
    out = pd("--json", "jobs", "--watch")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(isinstance(r, dict) and r["id"] == job_id for r in rows)
    assert rows[-1]["state"] == "succeeded"


# -- the log and status --------------------------------------------------------------------------------
def test_log_records_jobs_errors_and_requests(pd_env: dict[str, Path], tmp_path: Path) -> None:
    start_serve(pd_env["socket"], "--log-level", "DEBUG")
    add_local("loc", tmp_path / "r", "-o", "create_root=true")
    add_local("gone", tmp_path / "missing")
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(1000))
    assert pd("cp", str(src), "loc:a.bin").returncode == 0
    assert pd("cp", str(src), "gone:a.bin").returncode == 1
    assert pd("remote", "check", "gone").returncode == 1
    log = pd("log", "-n", "500")
    assert log.returncode == 0
    text = log.stdout
    assert re.search(r"job \w+ started: transfer\.upload remote='loc' key='a\.bin'", text), text
    assert re.search(r"job \w+ succeeded: transfer\.upload .*1000 bytes.* in [\d.]+ s", text), text
    assert re.search(r"job \w+ failed: transfer\.upload remote='gone'.*\[code 1001\]", text), text
    assert "remote gone check failed: " in text and "[code 1001]" in text
    assert "request remote.upsert" in text  # requests at debug, by name
    st = pd("status").stdout
    assert f"log    {pd_env['home'] / 'daemon.log'}" in st
    assert json.loads(pd("--json", "status").stdout)["log_path"] == str(pd_env["home"] / "daemon.log")
    follow = subprocess.Popen(pd_cmd("log", "-f", "-n", "0"), stdout=subprocess.PIPE, text=True)
    try:
        assert pd("ls", "gone:").returncode == 1
        assert follow.stdout is not None
        line = follow.stdout.readline()
        while "object.list failed" not in line:
            line = follow.stdout.readline()
        assert "[code 1001]" in line
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(30)


def test_status_names_the_socket_systemd_gave(pd_env: dict[str, Path]) -> None:
    real = pd_env["base"] / "run" / "activated.sock"
    lsock = bind_listener(real)
    env = dict(os.environ, PD_TEST_LISTEN_FD=str(lsock.fileno()))
    proc = subprocess.Popen([sys.executable, "-c", ACTIVATE, "-m", "pipedaemon", "serve", "--socket",
                             str(pd_env["socket"])], env=env, pass_fds=(lsock.fileno(),),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_socket(real, proc=proc)
        with PipeClient(socket_path=real, auto_start=False) as c:
            assert c.status().socket_path == str(real)
        off = pd("status")  # the configured socket: nobody there, and the real one is named
        assert off.returncode == 3 and str(real) in off.stderr
    finally:
        proc.terminate()
        proc.wait(30)
        lsock.close()


# -- --json errors -------------------------------------------------------------------------------------
def test_json_errors_on_stdout_with_the_same_exit_codes(tmp_path: Path) -> None:
    none = pd("--json", "status")
    assert none.returncode == 3
    assert json.loads(none.stdout)["error"]["kind"] == "connection"
    add_local("gone", tmp_path / "missing")
    bad = pd("--json", "ls", "gone:")
    assert bad.returncode == 1
    err = json.loads(bad.stdout)["error"]
    assert err["code"] == 1001 and err["data"]["path"] == str(tmp_path / "missing") and err["message"]
    assert "[code 1001]" in bad.stderr


# -- doctor ---------------------------------------------------------------------------------------------
def test_doctor_finds_problems_and_says_how_to_fix(pd_env: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no units installed
    add_local("loc", tmp_path)
    good = pd("doctor")
    assert good.returncode == 0 and "no problems found" in good.stdout, good.stdout
    assert "ok    remote loc" in good.stdout and "versions: client" in good.stdout
    add_local("gone", tmp_path / "missing")
    (pd_env["home"] / "state.db").chmod(0o644)
    bad = pd("doctor")
    assert bad.returncode == 1
    assert "FAIL  remote gone" in bad.stdout and "FAIL  state" in bad.stdout
    assert f"fix: chmod 600 {pd_env['home'] / 'state.db'}" in bad.stdout
    checks = json.loads(pd("--json", "doctor").stdout)
    assert checks["ok"] is False and {c["name"] for c in checks["checks"] if not c["ok"]} >= {"remote gone"}
    assert all(c["fix"] for c in checks["checks"] if not c["ok"])


# -- completion, units -------------------------------------------------------------------------------------
@pytest.mark.parametrize("words, cword, expected", [
    ("pipedaemon remote show ", 3, "plain,loc"),
    ("pipedaemon ls lo", 2, "plain,loc:"),
    ("pipedaemon pull --pipe ", 3, "plain,pp"),
])
def test_shell_completion_of_remote_and_pipe_names(tmp_path: Path, words: str, cword: int,
                                                   expected: str) -> None:
    add_local("loc", tmp_path)
    with PipeClient() as c:
        c.upsert_pipe({"name": "pp", "remote": "loc"})
    env = dict(os.environ, _PIPEDAEMON_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword))
    out = subprocess.run(pd_cmd(), capture_output=True, text=True, env=env, timeout=60)
    assert expected in out.stdout.splitlines(), out.stdout


def _complete(words: str, cword: int) -> list[str]:
    env = dict(os.environ, _PIPEDAEMON_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword))
    out = subprocess.run(pd_cmd(), capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return [line.split(",", 1)[1] for line in out.stdout.splitlines() if line.startswith("plain,")]


def test_shell_completion_of_job_ids(pd_env: dict[str, Path], tmp_path: Path) -> None:
    add_local("loc", tmp_path / "r", "-o", "create_root=true")
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"x" * 10)
    big.write_bytes(os.urandom(1 << 20))
    assert pd("cp", str(small), "loc:small.bin").returncode == 0
    with PipeClient(auto_start=False) as c:
        done = c.jobs(state="succeeded")[0].id
        slow_daemon(128 << 10)
        out = pd("cp", "--detach", str(big), "loc:big.bin")
        live = re.search(r"started job ([0-9a-f]{16})", out.stdout)[1]  # type: ignore[index]
        assert set(_complete("pipedaemon cancel ", 2)) == {live}, "only jobs that can be cancelled"
        assert {done, live} <= set(_complete("pipedaemon jobs ", 2))
        assert _complete(f"pipedaemon jobs {done[:6]}", 2) == [done]
        shown = pd("jobs", done)
        assert shown.returncode == 0 and shown.stdout.startswith(done) and live not in shown.stdout
        c.cancel(live)
        c.shutdown()
    wait_for(lambda: daemon_pids(pd_env["socket"]) == [], what="the daemon to stop")
    assert _complete("pipedaemon cancel ", 2) == [] and _complete("pipedaemon jobs ", 2) == []
    assert daemon_pids(pd_env["socket"]) == [], "completion started a daemon"


def test_install_service_documentation_exists_and_socket_warning(tmp_path: Path) -> None:
    doc = re.search(r"^Documentation=file://(.+)$", unit_texts()["pipedaemon.service"], re.M)
    assert doc and Path(doc[1]).is_file()
    assert "Documentation=" not in unit_texts(docs=tmp_path / "none.md")["pipedaemon.service"]
    out = pd("install-service", "--dest", str(tmp_path / "units"))
    assert out.returncode == 0 and "warning: PIPEDAEMON_SOCKET is set" in out.stderr
    env = {k: v for k, v in os.environ.items() if k != "PIPEDAEMON_SOCKET"}
    quiet = pd("install-service", "--dest", str(tmp_path / "units2"), env=env)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
