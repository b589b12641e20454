"""The daemon and job commands of the CLI, run as users run them (a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipedaemon_sdk import PipeClient
from tests.support.spine import daemon_pids, pd_cmd, random_file, s3etag, sparse_file, wait_gone

MiB = 2**20
HUGE = 64 * 2**30


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(pd_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_status_without_daemon_fails_and_starts_nothing(pd_env: dict[str, Path]) -> None:
    out = cli("status")
    assert out.returncode == 3
    assert "error:" in out.stderr
    assert daemon_pids(pd_env["socket"]) == []


def test_status_and_stop(pd_env: dict[str, Path]) -> None:
    with PipeClient() as c:
        pid = c.status().pid
    out = cli("status")
    assert out.returncode == 0
    assert f"pid {pid}" in out.stdout and str(pd_env["socket"]) in out.stdout
    st = json.loads(cli("--json", "status").stdout)
    assert st["pid"] == pid and st["socket_path"] == str(pd_env["socket"])
    stop = cli("--json", "stop")
    assert stop.returncode == 0
    assert json.loads(stop.stdout) == {"stopped": True, "pid": pid}
    wait_gone(pid)
    assert not pd_env["socket"].exists()
    again = cli("stop")
    assert again.returncode == 0 and "not running" in again.stdout
    assert json.loads(cli("--json", "stop").stdout) == {"stopped": False, "running": False}


@pytest.mark.parametrize("algorithm", ["md5", "sha256", "s3etag"])
def test_hash(algorithm: str, tmp_path: Path) -> None:
    path = random_file(tmp_path / "data.bin", 3 * MiB + 5)
    data = path.read_bytes()
    expected = s3etag(data, 8 * MiB) if algorithm == "s3etag" else hashlib.new(algorithm, data).hexdigest()
    out = cli("hash", str(path), "--algorithm", algorithm)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [expected, str(path)]
    assert out.stderr == ""  # no progress bar when stderr is not a terminal
    as_json = json.loads(cli("--json", "hash", str(path), "--algorithm", algorithm).stdout)
    assert as_json == {"path": str(path), algorithm: expected}


def test_hash_s3etag_part_size(tmp_path: Path) -> None:
    path = random_file(tmp_path / "data.bin", 3 * MiB + 5)
    out = cli("--json", "hash", str(path), "--algorithm", "s3etag", "--part-size", "1MiB")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["s3etag"] == s3etag(path.read_bytes(), MiB)
    assert json.loads(out.stdout)["s3etag"].endswith("-4")
    assert cli("hash", str(path), "--algorithm", "s3etag", "--part-size", "8MiB").stdout.split()[0] == (
        hashlib.md5(path.read_bytes()).hexdigest())


def test_hash_errors(tmp_path: Path) -> None:
    missing = cli("hash", str(tmp_path / "missing"))
    assert missing.returncode == 1
    assert "code 1001" in missing.stderr and "Traceback" not in missing.stderr
    bad_size = cli("hash", str(tmp_path / "missing"), "--part-size", "lots")
    assert bad_size.returncode == 2
    bad_algo = cli("hash", str(tmp_path / "missing"), "--algorithm", "crc32")
    assert bad_algo.returncode == 2


def test_jobs_lists_and_filters(tmp_path: Path) -> None:
    path = random_file(tmp_path / "f", 1000)
    with PipeClient() as c:
        done = c.hash_file(path, algorithm="md5", wait=False)
        done.wait()
        second = c.hash_file(path, algorithm="md5", wait=False)
    out = cli("jobs")
    assert out.returncode == 0
    assert done.id in out.stdout and "succeeded" in out.stdout
    listed = json.loads(cli("--json", "jobs").stdout)
    assert {j["id"] for j in listed} == {done.id, second.id}
    only = json.loads(cli("--json", "jobs", "--state", "cancelled").stdout)
    assert only == []


def test_jobs_without_any() -> None:
    out = cli("jobs")
    assert out.returncode == 0 and out.stdout.strip() == "no jobs"
    watch = cli("jobs", "--watch")
    assert watch.returncode == 0 and "no running jobs" in watch.stdout


def test_jobs_watch_until_none_run(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    with PipeClient() as c:
        job = c.hash_file(path, algorithm="md5", wait=False)
        next(iter(job.events()))
        watch = subprocess.Popen(pd_cmd("--json", "jobs", "--watch"), stdout=subprocess.PIPE, text=True)
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())  # one JSON object per line, a job each
        assert first["id"] == job.id and first["state"] == "running"
        c.cancel(job.id)
        rest, _ = watch.communicate(timeout=60)
    assert watch.returncode == 0
    last = json.loads(rest.strip().splitlines()[-1])  # the job's final state is printed as it ends
    assert last["id"] == job.id and last["state"] == "cancelled"


def test_cancel(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "huge", HUGE)
    with PipeClient() as c:
        job = c.hash_file(path, algorithm="md5", wait=False)
        next(iter(job.events()))
        out = cli("cancel", job.id)
        assert out.returncode == 0, out.stderr
        assert job.id in out.stdout and "cancelled" in out.stdout
        assert c.job(job.id).state == "cancelled"
    as_json = json.loads(cli("--json", "cancel", job.id).stdout)
    assert as_json["state"] == "cancelled" and as_json["error"]["code"] == 1007
    unknown = cli("cancel", "nosuchjob")
    assert unknown.returncode == 1 and "code 1001" in unknown.stderr


def test_install_service(tmp_path: Path) -> None:
    dest = tmp_path / "units"
    out = cli("install-service", "--dest", str(dest))
    assert out.returncode == 0
    service = (dest / "pipedaemon.service").read_text()
    sock = (dest / "pipedaemon.socket").read_text()
    assert "Type=notify" in service
    assert f"ExecStart={sys.executable} -m pipedaemon serve" in service
    assert "ListenStream=%t/pipedaemon/pipedaemon.sock" in sock
    assert "systemctl --user enable --now pipedaemon.socket" in out.stdout
    assert str(dest / "pipedaemon.service") in out.stdout


def test_console_script_and_version() -> None:
    script = Path(sys.executable).parent / "pipedaemon"
    assert script.exists()
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "0.1" in out.stdout
    assert cli("--help").returncode == 0


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    assert shutil.which("script"), "script(1) (util-linux, Debian's bsdutils) gives the CLI a terminal"
    path = sparse_file(tmp_path / "sparse.bin", 64 * MiB)
    cmd = shlex.join(pd_cmd("hash", str(path), "--algorithm", "md5"))
    out = subprocess.run(["script", "-qefc", cmd, "/dev/null"], capture_output=True, timeout=120,
                         env=dict(os.environ, COLUMNS="120"), stdin=subprocess.DEVNULL)
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0, text
    assert "sparse.bin" in text and "100%" in text and "━" * 10 in text  # rich's bar
    assert hashlib.md5(bytes(64 * MiB)).hexdigest() in text
