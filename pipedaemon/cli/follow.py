"""Following a job from the terminal: progress, Ctrl-C, --detach, a daemon that goes away.

- Ctrl-C cancels the job (the daemon removes its temporary files and aborts multipart
  uploads), says so and exits 130.
- ``--detach`` leaves the job to the daemon and prints how to follow it.
- A daemon that was asked to stop (``pipedaemon stop``): say so and end, without starting
  another one (that would undo the stop).
- A daemon that died: start it again (it resumes the job) and follow the job there.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from pipedaemon_sdk import DaemonConnectionError, DaemonStoppedError, Job, JobInfo
from pipedaemon_sdk.job import outcome

from .common import emit
from .progress import Bar

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
RECONNECTS = 2  # daemons started again for one command before giving up


def detach_option(f: Any) -> Any:
    return click.option("--detach", is_flag=True,
                        help="Start the job and return at once; it runs on in the daemon "
                             "(follow it with `pipedaemon jobs --watch`).")(f)


def announce_detached(ctx: click.Context, job: Job) -> None:
    emit(ctx, {"job_id": job.id, "kind": job.info.kind, "state": job.info.state, "detached": True},
         lambda r: f"started job {r['job_id']} ({r['kind']}); it runs on in the daemon\n"
                   f"follow it:  pipedaemon jobs --watch\ncancel it:  pipedaemon cancel {r['job_id']}")


def run_job(ctx: click.Context, start: Callable[[], Job], *, detach: bool, label: str = "") -> JobInfo | None:
    """Start a job and follow it to its end: its JobInfo (its error raised), None when detached."""
    job = start()
    if detach:
        announce_detached(ctx, job)
        return None
    bar = Bar(enabled=None if not ctx.obj.get("json") else False, label=label)
    try:
        info = _follow(job, bar)
    except KeyboardInterrupt:
        bar.close()
        _cancel(job)
    bar.close(info)
    return outcome(info)


def _follow(job: Job, bar: Bar) -> JobInfo:
    restarts = 0
    while True:
        try:
            for ev in job.events():
                bar(ev)
            return job.info
        except DaemonStoppedError as err:
            bar.close()
            raise DaemonConnectionError(
                f"{err}: not starting another daemon. `pipedaemon jobs` shows it once a daemon runs "
                "again (any pipedaemon command starts one)") from None
        except DaemonConnectionError:
            bar.close()
            restarts += 1
            if restarts > RECONNECTS:
                raise DaemonConnectionError(
                    f"lost the daemon while following job {job.id}; run the same command again: "
                    "the job is checkpointed and resumes when the daemon starts") from None
            click.echo(f"lost the daemon while following job {job.id}; starting it again, "
                       "where the job resumes", err=True)


def _cancel(job: Job) -> None:
    """Ctrl-C: cancel the job in the daemon, say so, exit 130. A second Ctrl-C while cancelling
    leaves the cancel to the daemon (it was sent) and ends at once."""
    click.echo(f"\ninterrupted: cancelling job {job.id} ...", err=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        info = job.cancel()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - say what happened, the exit status stays 130
        click.echo(f"could not cancel job {job.id}: {exc}; see `pipedaemon jobs`", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if info.state == "cancelled":
        click.echo(f"cancelled job {job.id}: its temporary files were removed and partial uploads "
                   "aborted (use --detach to leave a job running)", err=True)
    else:
        click.echo(f"job {job.id} had already ended ({info.state})", err=True)
    sys.exit(EXIT_INTERRUPTED)
