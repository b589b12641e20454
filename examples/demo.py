"""`make demo`: the main job of pipedaemon, end to end, with nothing to set up.

A vendor drops CSV files in a folder; we register that folder as a remote, name a
data pipe over it, pull only what is new, edit a file and push it back. Then the
single-file tools: hash a file, and the bucket API (fput/fget/get).

Everything lives in a temporary folder: its own PIPEDAEMON_HOME, socket and
filerepo, so the demo never touches a daemon or files you already have. The
"vendor" is a local-folder remote so no account or server is needed; an S3, SFTP
or FTP remote works the same way (see docs/quickstart.md).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The demo's own daemon: set before the SDK picks its socket and home.
WORK = Path(tempfile.mkdtemp(prefix="pd-demo-"))
os.environ["PIPEDAEMON_HOME"] = str(WORK / "home")
os.environ["PIPEDAEMON_SOCKET"] = str(WORK / "run" / "pipedaemon.sock")
os.environ.pop("PIPEDAEMON_PROFILE", None)

from pipedaemon_sdk import PipeClient, ProgressEvent  # noqa: E402 - after the environment above

MiB = 1 << 20
VENDOR = WORK / "vendor"  # the "remote storage"
REPO = WORK / "filerepo"  # where pipes keep their local copies


def title(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}")


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Bar:
    """A progress bar fed by on_progress (ProgressEvent): redrawn in place on a terminal,
    a line per quarter otherwise (so a log stays readable)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.next_quarter = 0.0
        self.last = ""

    def __call__(self, ev: ProgressEvent) -> None:
        filled = int(ev.percent / 100 * 30)
        self.last = (f"  [{'#' * filled}{'.' * (30 - filled)}] {ev.percent:5.1f}%  "
                     f"{human(ev.bytes_done):>9}/{human(ev.bytes_total)}  {ev.rate_mbps:5.1f} MB/s  "
                     f"file {min(ev.file_index + 1, ev.file_count)}/{ev.file_count}")
        if self.tty:
            print("\r" + self.last, end="", flush=True)
        elif ev.percent >= self.next_quarter:
            print(self.last)
            self.next_quarter = (int(ev.percent) // 25 + 1) * 25

    def done(self) -> None:
        if self.tty and self.last:
            print()


def show_files(rows: list[dict[str, Any]], verb: str = "") -> None:
    for r in rows:
        action = r.get("action", verb)
        print(f"  {action:<9} {r['filename']:<28} {human(r['size']):>10}")
    if not rows:
        print("  (nothing)")


def make_vendor_files() -> None:
    """A vendor folder: daily CSVs (two big enough to show progress), a backup and a readme."""
    rows = "".join(f"2024-01-{d:02d},{d * 7 % 13},{d * 1.5:.1f}\n" for d in range(1, 29))
    for day in (1, 2, 3):
        (VENDOR / f"daily-2024-01-0{day}.csv").write_text("date,store,sales\n" + rows * day)
    for name in ("daily-big-1.csv", "daily-big-2.csv"):  # 24 MiB each
        (VENDOR / name).write_bytes(b"date,store,sales\n" + os.urandom(24 * MiB))
    (VENDOR / "backup").mkdir()
    (VENDOR / "backup" / "daily-old.csv").write_text("date,store,sales\n")
    (VENDOR / "README.md").write_text("Vendor feed: one daily-*.csv per day, columns date,store,sales.\n")


def main() -> None:
    VENDOR.mkdir()
    make_vendor_files()
    t0 = time.monotonic()
    print(f"demo folder: {WORK}")

    with PipeClient() as client:  # no daemon is running: the client starts one
        st = client.status()
        print(f"daemon {st.version}, pid {st.pid}, socket {st.socket_path}")
        # The pipes' local copies go to the demo folder, not ~/pipedaemon-data. The bandwidth
        # limit only slows the pull down enough for the progress bar to be seen.
        client.update_profile_config({"filerepo": str(REPO), "bwlimit_bps": 20_000_000})

        title("register the vendor's storage as a remote, and a pipe over it")
        client.upsert_remote({"name": "vendor", "protocol": "local", "options": {"remotepath": str(VENDOR)}})
        check = client.check_remote("vendor")
        print(f"  remote 'vendor': ok={check['ok']} read={check['can_read']} write={check['can_write']}")
        client.upsert_pipe({"name": "vendor-daily", "remote": "vendor",
                            "options": {"include": "daily*.csv", "exclude": "backup*"}})
        pipe = client.pipe("vendor-daily")
        print(f"  pipe 'vendor-daily' -> local folder {pipe.dirpath}")
        print(f"  remote files in the pipe: {pipe.scan_remote()}")

        title("pull_preview: what would move (nothing moves)")
        show_files(pipe.pull_preview(), "new")

        title("pull, with a progress bar")
        bar = Bar()
        moved = pipe.pull(on_progress=bar)
        bar.done()
        show_files(moved)
        print(f"  {len(moved)} files, {human(sum(r['size'] for r in moved))} in {pipe.dirpath}")
        for doc, text in moved.docs.items():  # README.md/LICENSE.md of the pipe, on its first pull
            print(f"  {doc} from the vendor: {text.strip()}")

        title("pull again: nothing changed, nothing moves")
        again = pipe.pull()
        print(f"  moved {len(again)} files; is_synced() = {pipe.is_synced()}")

        title("the vendor adds a file: only that file moves")
        (VENDOR / "daily-2024-01-04.csv").write_text("date,store,sales\n2024-01-04,3,9.5\n")
        print(f"  pull() moves {len(pipe.pull())} files: within its TTL (300 s) the daemon trusts its\n"
              "  cached listing, which knows only the changes the daemon made; cached=False lists afresh:")
        show_files(pipe.pull(cached=False))  # list the remote afresh

        title("edit a file locally, then push")
        edited = pipe.dirpath / "daily-2024-01-02.csv"
        with edited.open("a") as f:
            f.write("2024-01-29,5,42.0\n")
        print("  push_preview():")
        show_files(pipe.push_preview())
        print("  push():")
        show_files(pipe.push())
        remote_copy = VENDOR / "daily-2024-01-02.csv"
        print(f"  the vendor's copy now ends with: {remote_copy.read_text().splitlines()[-1]!r}")
        print(f"  identical to ours: {remote_copy.read_bytes() == edited.read_bytes()}")

        title("hash_file: tell whether a local file equals a remote object")
        big = pipe.dirpath / "daily-big-1.csv"
        sha = client.hash_file(big, algorithm="sha256")
        etag = client.hash_file(big, algorithm="s3etag", part_size=8 * MiB)
        print(f"  sha256 {sha['sha256']}\n  s3etag {etag['s3etag']} (as S3 would show it for 8 MiB parts)")

        title("bucket API: the remote's top-level folders are its buckets")
        ds = client.datastore("vendor")
        ds.create_bucket("reports")
        bucket = ds.get_bucket("reports")
        summary = WORK / "summary.csv"
        summary.write_text("store,total\n1,100.5\n2,87.0\n")
        bucket.fput("2024/summary.csv", summary)
        print(f"  fput {summary.name} -> reports/2024/summary.csv")
        print(f"  buckets: {ds.list()}")
        for obj in bucket.list():
            print(f"  object {obj.name}  {obj.size} bytes")
        back = WORK / "summary-back.csv"
        bucket.fget("2024/summary.csv", back)
        print(f"  fget -> {back.name}, same bytes: {back.read_bytes() == summary.read_bytes()}")
        with bucket.get("2024/summary.csv") as stream:
            print(f"  get -> first line {stream.read().splitlines()[0]!r}")

        title("done")
        kinds = sorted({j.kind for j in client.jobs()})
        print(f"  {len(client.jobs())} jobs ran in this daemon ({', '.join(kinds)}), all "
              f"{'succeeded' if all(j.state == 'succeeded' for j in client.jobs()) else 'finished'}")
        client.shutdown()
    print(f"  daemon stopped; demo took {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
