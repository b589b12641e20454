"""Change events and schedules against real servers (local folder, OpenSSH sftp, moto S3).

Nothing here waits on a clock: a test waits for the event it expects (with a generous
timeout that only turns a hang into a failure) and then checks what happened.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from pipedaemon.pipes.schedspec import (
    BACKOFF_CAP_S,
    MIN_PERIOD_S,
    ScheduleSpec,
    backoff,
    duration,
    next_slot,
    parse_schedule,
)
from pipedaemon_sdk import InvalidSettingsError, PipeClient
from pipedaemon_sdk.watch import Event, Watch
from tests.support.pipes import Storage, restart

WAIT = 60.0  # only bounds a hang


def next_of(w: Watch, kind: str, pipe: str | None = None, pred: Any = None) -> Event:
    """The next event of ``kind`` (for ``pipe``) that satisfies ``pred``; fails after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ev = w.next_event(timeout=max(0.1, deadline - time.monotonic()))
        if (
            ev is not None
            and ev.kind == kind
            and (pipe is None or ev.pipe == pipe)
            and (pred is None or pred(ev))
        ):
            return ev
    raise AssertionError(f"no {kind} event for {pipe} within {WAIT} s")


# -- settings ------------------------------------------------------------------------------
def test_periods_at_the_minimum() -> None:
    with pytest.raises(InvalidSettingsError) as err:
        parse_schedule({"every": MIN_PERIOD_S - 0.001})
    assert err.value.data["field"] == "schedule.every"
    assert duration(parse_schedule({"every": MIN_PERIOD_S}).every, "every") == MIN_PERIOD_S
    assert duration(parse_schedule({"every": "1001ms"}).every, "every") == pytest.approx(1.001)
    assert duration("15m", "x") == 900 and duration("2h", "x") == 7200 and duration("1d", "x") == 86400


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"every": "soon"}, "schedule.every"),
        ({"every": "1m", "at": "02:30"}, "schedule.every"),
        ({}, "schedule.every"),
        ({"at": "24:00"}, "schedule.at"),
        ({"every": "1m", "action": "sync"}, "schedule.action"),
        ({"every": "1m", "jitter": "2m"}, "schedule.jitter"),
        ({"every": "1m", "colour": 1}, "schedule.colour"),
    ],
)
def test_bad_schedules_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSettingsError) as err:
        parse_schedule(raw)
    assert err.value.data["field"] == field


def test_at_runs_next_at_that_local_time_and_backoff_is_capped() -> None:
    spec = ScheduleSpec(at="02:30")
    now = time.time()
    nxt = next_slot(spec, now)
    local = time.localtime(nxt)
    assert (local.tm_hour, local.tm_min) == (2, 30) and now < nxt <= now + 86400 + 3600
    every = ScheduleSpec(every="10s")
    delays = [backoff(every, f, now) - now for f in (1, 2, 3)]
    assert delays == [20, 40, 80]  # doubled per failure
    assert backoff(every, 40, now) - now == BACKOFF_CAP_S


# -- events ----------------------------------------------------------------------------------
def test_any_scan_tells_watchers_what_changed(client: PipeClient, local_storage: Storage) -> None:
    local_storage.put("a.csv", "1")
    local_storage.put("b.csv", "2")
    client.upsert_pipe({"name": "p", "remote": "r"})
    client.upsert_pipe({"name": "q", "remote": "r", "options": {"include": "*.txt"}})
    client.pipe("p").scan_remote(cached=False)  # the first listing: nothing to compare with
    with client.watch(pipes=["p", "q"]) as w:
        local_storage.put("c.csv", "3")
        local_storage.put("b.csv", "22")
        local_storage.delete("a.csv")
        client.pipe("p").scan_remote(cached=False)
        ev = next_of(w, "pipe.changed", "p")
        assert (ev.new, ev.modified, ev.gone) == (["c.csv"], ["b.csv"], ["a.csv"])
        client.pipe("p").scan_remote(cached=False)  # unchanged: no event
        local_storage.put("d.txt", "4")
        client.pipe("p").scan_remote(cached=False)
        ev2 = next_of(w, "pipe.changed")
        ev3 = next_of(w, "pipe.changed")
    # q filters *.txt: it hears only of d.txt; ids only grow, one event per pipe and scan.
    assert {(e.pipe, tuple(e.new)) for e in (ev2, ev3)} == {("p", ("d.txt",)), ("q", ("d.txt",))}
    assert ev.id < min(ev2.id, ev3.id)
    missed = client.events(since=ev.id - 1, pipes=["p"])
    assert [e["id"] for e in missed["events"]] == [ev.id, max(ev2.id, ev3.id) if ev3.pipe == "p" else ev2.id]
    assert missed["complete"] is True
    with client.watch(pipes=["p"], since=ev.id - 1) as again:  # a subscriber catching up
        assert again.next_event(timeout=5).id == ev.id
        assert again.missed is False


def test_events_beyond_retention_are_reported_missed(
    client: PipeClient, pd_env: dict[str, Path], local_storage: Storage
) -> None:
    client.upsert_pipe({"name": "p", "remote": "r"})
    client.pipe("p").scan_remote(cached=False)
    for i in range(2):
        local_storage.put(f"f{i}", "x")
        client.pipe("p").scan_remote(cached=False)
    first = client.events(since=0, pipes=["p"])["events"]
    assert len(first) == 2
    with sqlite3.connect(pd_env["home"] / "state.db", timeout=30) as db:  # as pruning would
        db.execute("DELETE FROM events WHERE id=?", (first[0]["id"],))
    later = client.events(since=first[0]["id"] - 1)
    assert later["complete"] is False and [e["id"] for e in later["events"]] == [first[1]["id"]]
    assert client.events(since=first[0]["id"])["complete"] is True
    from click.testing import CliRunner

    from pipedaemon.cli import main_group

    out = CliRunner().invoke(main_group, ["watch", "--pipe", "p", "--since", "0", "--count", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.splitlines()[-1])["id"] == first[1]["id"]
    assert "pruned" in out.output  # the missing first event is said


# -- schedules ----------------------------------------------------------------------------------
def test_scheduled_check_then_pull_across_a_restart(client: PipeClient, s3_storage: Storage) -> None:
    client.upsert_pipe({"name": "p", "remote": "r"})
    client.pipe("p").scan_remote(cached=False)  # what the scheduled checks compare with
    client.set_schedule("p", {"every": "1s", "action": "check"})
    with client.watch(pipes=["p"]) as w:
        s3_storage.put("new.csv", "fresh")
        ev = next_of(w, "pipe.changed", "p", lambda e: "new.csv" in e.new)
    assert ev.new == ["new.csv"] and ev.gone == []
    # Now a pull: the scheduled job lands the file, and reaches the watcher as job.finished.
    client.set_schedule("p", {"every": "1s", "action": "pull"})
    with client.watch(pipes=["p"]) as w:
        done = next_of(w, "job.finished", "p")
    assert done.job is not None and done.job.state == "succeeded" and done.job.kind == "pipe.pull"
    assert (client.pipe("p").dirpath / "new.csv").read_text() == "fresh"
    restart(client)
    [row] = client.schedules()
    assert row["pipe"] == "p" and row["schedule"] == {"every": "1s", "action": "pull"}
    assert row["last_status"] in ("succeeded", "running") and row["failures"] == 0
    with client.watch(pipes=["p"]) as w:
        s3_storage.put("later.csv", "again")
        next_of(
            w, "job.finished", "p", lambda e: any(f["filename"] == "later.csv" for f in e.job.result["files"])
        )
    assert (client.pipe("p").dirpath / "later.csv").read_text() == "again"
    assert client.remove_schedule("p") == {"pipe": "p", "removed": True}
    assert client.schedules() == []


def test_a_scheduled_push_lands_a_local_edit(client: PipeClient, s3_storage: Storage) -> None:
    client.upsert_pipe({"name": "p", "remote": "r"})
    local = Path(client.pipe("p").dirpath)
    local.mkdir(parents=True, exist_ok=True)
    (local / "edit.csv").write_text("made here")
    with client.watch(pipes=["p"]) as w:
        client.set_schedule("p", {"every": "1s", "action": "push"})
        done = next_of(w, "job.finished", "p")
    assert done.job is not None and done.job.kind == "pipe.push" and done.job.state == "succeeded"
    assert [f["filename"] for f in done.job.result["files"]] == ["edit.csv"]
    assert s3_storage.read("edit.csv") == b"made here"  # on the storage, read around the daemon
    listed = {j.id: j for j in client.jobs(limit=1000)}
    assert listed[done.job.id].kind == "pipe.push" and listed[done.job.id].state == "succeeded"
    client.remove_schedule("p")


def test_a_long_scheduled_job_is_not_started_twice(client: PipeClient, local_storage: Storage) -> None:
    local_storage.put("big.bin", b"x" * (3 << 20))
    client.update_profile_config({"bwlimit_bps": 1 << 20})  # ~3 s for the pull: many periods of 1 s
    with client.watch(pipes=["p"]) as w:
        client.upsert_pipe({"name": "p", "remote": "r", "schedule": {"every": "1s", "action": "pull"}})
        first = next_of(w, "job.finished", "p")
    assert first.job.state == "succeeded"
    pulls = [j for j in client.jobs(limit=1000) if j.kind == "pipe.pull"]
    # Every other pull began after the first had ended: never two at once.
    assert all(j.created_at >= first.job.updated_at for j in pulls if j.id != first.job.id)
    client.remove_schedule("p")


def test_a_failing_schedule_backs_off_and_shows_its_error(
    client: PipeClient, local_storage: Storage, tmp_path: Path
) -> None:
    (tmp_path / "not-a-folder").write_text("a file")
    client.update_profile_config({"filerepo": str(tmp_path / "not-a-folder" / "repo")})
    local_storage.put("a.csv", "1")
    with client.watch(pipes=["p"]) as w:
        client.upsert_pipe({"name": "p", "remote": "r", "schedule": {"every": "1s", "action": "pull"}})
        ev = next_of(w, "job.finished", "p")
        assert ev.job.state == "failed"
        next_of(w, "job.finished", "p")  # and once more, later
    told = [e for e in client.events(since=0, pipes=["p"])["events"] if e["kind"] == "schedule.failed"]
    assert told[0]["job_id"] == ev.job.id and told[0]["action"] == "pull" and told[0]["error"]["code"] == 1005
    assert told[0]["id"] < ev.id  # told just before the job's job.finished
    [row] = client.schedules()
    assert row["last_status"] == "failed" and row["last_error"]["code"] == 1005
    assert row["failures"] >= 2
    assert row["next_run"] - row["last_run"] >= 2 ** row["failures"]  # the period doubled per failure


AT_LEAD_S = 6  # the daemon's minutes begin this long after the fixture: a daemon start, not a wait


@pytest.fixture
def tz_phase(monkeypatch: pytest.MonkeyPatch) -> int:
    """Give the daemon about to start a time zone whose minutes begin ``AT_LEAD_S`` seconds from now.

    POSIX TZ offsets have seconds ("PDX-0:00:37": local time 37 s ahead of UTC), so an
    ``at`` schedule's HH:MM comes once a minute at a second of our choice: no minute is
    waited for. Returns the offset in seconds.
    """
    off = (-(int(time.time()) + AT_LEAD_S)) % 60
    monkeypatch.setenv("TZ", f"PDX-0:00:{off:02d}")
    return off


def _next_minute(off: int, ahead: float = 1.5) -> tuple[float, str]:
    """The next moment at least ``ahead`` seconds away at which the daemon's clock shows HH:MM:00."""
    t = int(time.time() + ahead) + 1
    t += (-(t + off)) % 60
    local = time.gmtime(t + off)
    return float(t), f"{local.tm_hour:02d}:{local.tm_min:02d}"


def test_an_at_schedule_runs_at_its_local_time(
    tz_phase: int, client: PipeClient, local_storage: Storage
) -> None:
    local_storage.put("a.csv", "1")
    client.upsert_pipe({"name": "p", "remote": "r"})
    with client.watch(pipes=["p"]) as w:
        planned = None
        for _ in range(3):  # a machine so slow that the daemon saw HH:MM only after it: the next minute
            slot, at = _next_minute(tz_phase)
            client.set_schedule("p", {"at": at, "action": "pull"})
            row: dict[str, Any] = {"next_run": planned}
            while row["next_run"] in (None, planned):
                time.sleep(0.05)  # until the scheduler has planned it (it is woken by set_schedule)
                [row] = client.schedules()
            planned = row["next_run"]
            if row["next_run"] == slot:  # planned for today's HH:MM, in the daemon's time zone
                break
        assert row["next_run"] == slot, (row, slot, at)
        while time.time() < slot:  # (a slow setup puts HH:MM up to a minute away: WAIT counts from it)
            time.sleep(0.1)
        done = next_of(w, "job.finished", "p")
    assert done.job is not None and done.job.kind == "pipe.pull" and done.job.state == "succeeded"
    assert (Path(client.pipe("p").dirpath) / "a.csv").read_text() == "1"
    [row] = client.schedules()
    assert row["last_run"] >= slot  # it ran at HH:MM, not before
    assert row["next_run"] == slot + 86400  # and runs next at HH:MM tomorrow
    assert len([j for j in client.jobs(limit=1000) if j.kind == "pipe.pull"]) == 1


def test_a_failed_scheduled_check_is_published(
    client: PipeClient, local_storage: Storage, local_spec: dict[str, Any]
) -> None:
    from click.testing import CliRunner

    from pipedaemon.cli import main_group

    client.upsert_pipe({"name": "p", "remote": "r"})
    root = Path(local_spec["root"])
    root.rename(root.with_name(root.name + ".away"))  # the remote cannot be listed: each check fails
    try:
        with client.watch(pipes=["p"]) as w:
            client.set_schedule("p", {"every": "1s", "action": "check"})
            first = next_of(w, "schedule.failed", "p")
            second = next_of(w, "schedule.failed", "p")
    finally:
        root.with_name(root.name + ".away").rename(root)
    assert (first.action, first.job_id, first.failures, second.failures) == ("check", None, 1, 2)
    assert first.error is not None and first.error["code"] == 1001 and first.error["message"]
    assert first.next_run is not None and second.next_run is not None
    assert second.time >= first.next_run  # the second try waited for the backed-off time
    assert second.next_run - second.time > first.next_run - first.time  # and the next waits longer
    [row] = client.schedules()  # what schedule list shows is what was published
    assert row["last_status"] == "failed" and row["failures"] >= second.failures
    assert row["last_error"]["code"] == second.error["code"]
    out = CliRunner().invoke(
        main_group, ["watch", "--pipe", "p", "--since", str(first.id - 1), "--count", "1"]
    )
    assert out.exit_code == 0 and "scheduled check failed (1 in a row)" in out.output, out.output
    client.remove_schedule("p")


def test_runs_missed_while_away_run_once(
    client: PipeClient, pd_env: dict[str, Path], local_storage: Storage
) -> None:
    local_storage.put("a.csv", "1")
    with client.watch(pipes=["p"]) as w:
        client.upsert_pipe({"name": "p", "remote": "r", "schedule": {"every": "1h", "action": "pull"}})
        first = next_of(w, "job.finished", "p")
    pid = client.status().pid
    client.shutdown()
    client.close()
    from tests.support.spine import wait_gone

    wait_gone(pid)
    with sqlite3.connect(pd_env["home"] / "state.db", timeout=30) as db:  # ten periods slept through
        db.execute("UPDATE schedule_state SET next_run=? WHERE pipe='p'", (time.time() - 10 * 3600,))
    client.connect()
    # From the last event seen: the new daemon may run the missed slot before this watch subscribes.
    with client.watch(pipes=["p"], since=first.id) as w:
        next_of(w, "job.finished", "p")
    [row] = client.schedules()
    assert row["next_run"] > time.time() + 3000  # planned a period on, not a slot per missed hour
    assert len([j for j in client.jobs(limit=1000) if j.kind == "pipe.pull"]) == 2


def test_schedule_cli_and_bad_input(client: PipeClient, local_storage: Storage) -> None:
    from click.testing import CliRunner

    from pipedaemon.cli import main_group

    client.upsert_pipe({"name": "p", "remote": "r"})
    run = CliRunner()
    out = run.invoke(main_group, ["schedule", "set", "p", "--every", "1h", "--action", "pull",
                                  "--jitter", "1m"])
    assert out.exit_code == 0 and "pull every 1h" in out.output, out.output
    out = run.invoke(main_group, ["--json", "schedule", "list"])
    [row] = json.loads(out.output)
    assert row["schedule"] == {"every": "1h", "action": "pull", "jitter": "1m"}
    out = run.invoke(main_group, ["schedule", "set", "p", "--every", "soon"])
    assert out.exit_code == 1 and "schedule.every" in out.output and "Traceback" not in out.output
    out = run.invoke(main_group, ["schedule", "run-now", "p"])
    assert out.exit_code == 0, out.output
    assert run.invoke(main_group, ["schedule", "rm", "p"]).exit_code == 0 and client.schedules() == []
    out = run.invoke(main_group, ["schedule", "run-now", "p"])
    assert out.exit_code == 1 and "no schedule" in out.output
    with pytest.raises(InvalidSettingsError) as err:
        client.set_schedule("p", {"every": "1s", "action": "mirror"})
    assert err.value.data["field"] == "schedule.action"
    with pytest.raises(InvalidSettingsError) as err:
        client.upsert_pipe({"name": "p", "remote": "r", "schedule": {"every": 0.5}})
    assert err.value.data["field"] == "schedule.every"


def test_async_client_watches_with_async_for(client: PipeClient, local_storage: Storage) -> None:
    import asyncio

    from pipedaemon_sdk import AsyncPipeClient

    client.upsert_pipe({"name": "p", "remote": "r"})
    client.pipe("p").scan_remote(cached=False)

    async def main() -> Event:
        async with AsyncPipeClient() as ac, ac.watch(pipes=["p"]) as w:
            local_storage.put("n.csv", "1")
            await ac.call("pipe.scan_remote", {"profile": "default", "name": "p", "cached": False})
            async for ev in w:
                return ev
        raise AssertionError("the watch ended")

    ev = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert (ev.kind, ev.pipe, ev.new) == ("pipe.changed", "p", ["n.csv"])


def test_mirror_pipe_settings_are_checked(client: PipeClient, local_storage: Storage) -> None:
    with pytest.raises(InvalidSettingsError) as err:
        client.upsert_pipe({"name": "m", "mirror": {"from": "r:a/", "to": "r:b/"}, "remote": "r"})
    assert err.value.data["field"] == "remote"
    with pytest.raises(InvalidSettingsError) as err:
        client.upsert_pipe({"name": "m", "mirror": {"from": "r:a/"}})
    assert err.value.data["field"] == "mirror.to"
    with pytest.raises(InvalidSettingsError) as err:
        client.upsert_pipe({"name": "m", "mirror": {"from": "nocolon", "to": "r:b/"}})
    assert err.value.data["field"] == "mirror.from"
    assert client.upsert_pipe({"name": "m", "mirror": {"from": "r:a/", "to": "r:b/"}})["created"] is True


def test_an_idle_daemon_stays_up_while_it_has_schedules(pd_env: dict[str, Path], tmp_path: Path,
                                                        local_spec: dict[str, Any]) -> None:
    from tests.support.spine import close_started, start_serve

    st = start_serve(pd_env["socket"], "--idle-timeout", "1")
    try:
        with PipeClient(auto_start=False) as c:
            c.update_profile_config({"filerepo": str(tmp_path / "repo")})
            c.upsert_remote(Storage("local", local_spec).settings("r"))
            c.upsert_pipe({"name": "p", "remote": "r", "schedule": {"every": "1s", "action": "pull"}})
            target = Path(c.pipe("p").dirpath) / "late.csv"
            while c.schedules()[0]["next_run"] is None:  # the scheduler has seen it (ticks every second)
                time.sleep(0.05)
        time.sleep(3)  # no client, idle beyond its timeout (not a timing check: the next lines are)
        Path(local_spec["root"], "late.csv").write_text("x")  # only a daemon still running pulls it
        deadline = time.monotonic() + WAIT
        while not target.exists() and time.monotonic() < deadline and st.proc.poll() is None:
            time.sleep(0.1)
        assert st.proc.poll() is None, (pd_env["home"] / "daemon.log").read_text()[-3000:]
        assert target.read_text() == "x"
        with PipeClient(auto_start=False) as c:
            c.remove_schedule("p")
        assert st.proc is not None and st.proc.wait(60) == 0  # nothing scheduled: idle exit
    finally:
        close_started(st)
