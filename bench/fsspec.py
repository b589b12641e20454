"""fsspec benchmark: pandas/Dask reading through ``pipe://`` next to s3fs, and the Dask fan-out pull.

    python -m bench fsspec [--parquet-mib 512] [--csv-files 2000] [--repeat 3] [--no-write]

One moto S3 server holds a parquet file (8 float columns) and a dataset of small
CSV files. Timed: reading 2 of the parquet file's columns with pandas (pyarrow),
through ``pipe://`` (the daemon reads the ranges) and through s3fs; reading the
whole CSV dataset with ``dask.dataframe.read_csv`` (threads), both ways; and
``pipedaemon_sdk.dask.pull`` of the CSV dataset on a LocalCluster of 1 and of 2
workers, each worker with its own daemon. Results go to the "fsspec" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import servers
from bench.report import write_section
from bench.tools import Daemon

SECTION = "## fsspec"
NOTE = ("Where the time goes: each ranged read of a `pipe://` file that is not in sync is one strea"
        "m connection to the daemon, and on S3 the daemon's `object.read` sends one GET whose answer giv"
        "es the size and ETag (no HEAD first, as s3fs); `info` comes from the daemon's cached listing. "
        "Before that change (a HEAD before every GET) the CSV case took 14.8 s and 16.5 s through `pip"
        "e://` in two runs (0.37 and 1.23 of s3fs, whose own time moved with the load). The p"
        "arquet case is dominated by the bytes (pyarrow reads the footer, then the two columns' ranges)."
        " The fan-out pull of small files gains little from a second worker here: both workers' daemons"
        " share the same 2 CPUs and one moto server; it pays off when the workers are separate machines"
        ". The machine is shared with other work: ratios move by tens of percent between runs.")
MiB = 1 << 20


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench fsspec", description=__doc__.split("\n\n")[0])
    ap.add_argument("--parquet-mib", type=int, default=512, help="size of the parquet file")
    ap.add_argument("--csv-files", type=int, default=2000, help="files in the CSV dataset")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case (median reported)")
    ap.add_argument("--no-write", dest="write", action="store_false", help="do not update docs/benchmarks.md")
    return ap.parse_args(argv)


def median_s(fn: Callable[[], Any], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def make_data(s3: servers.S3Server, bucket: str, base: Path, args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd

    rows = args.parquet_mib * MiB // 64  # 8 float64 columns
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f"c{i}": rng.random(rows) for i in range(8)})
    local = base / "big.parquet"
    df.to_parquet(local, engine="pyarrow", row_group_size=max(1, rows // 16))
    client = s3.boto3_client()
    client.upload_file(str(local), bucket, "data/big.parquet")
    local.unlink()
    body = pd.DataFrame({"a": range(20), "b": [f"x{i}" for i in range(20)]}).to_csv(index=False).encode()

    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"csv/part-{i:05d}.csv", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(args.csv_files)))


def fan_out(base: Path, settings: dict[str, Any], workers: int, files: int, repeat: int) -> float:
    from distributed import Client, LocalCluster

    from pipedaemon_sdk import PipeClient
    from pipedaemon_sdk import dask as pdask

    def setup(repo: str) -> None:
        with PipeClient() as c:
            c.upsert_remote(settings)
            c.update_profile_config({"filerepo": repo})

    def add_pipe(name: str) -> None:
        with PipeClient() as c:
            c.upsert_pipe({"name": name, "remote": "bench", "options": {"dir": "csv"}})

    def stop() -> None:
        with PipeClient() as c:
            c.shutdown()

    folder = base / f"fan{workers}"
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0")
    with cluster as lc, Client(lc) as dc:
        dc.register_plugin(pdask.PipedaemonPlugin(socket=f"{folder}/w{{name}}/pd.sock",
                                                  home=f"{folder}/w{{name}}/home"))
        dc.run(setup, str(base / "repo"))
        runs = []
        try:
            for i in range(repeat):
                name = f"fan{workers}-{i}"  # a fresh local folder each run: everything moves
                with PipeClient() as planner:
                    planner.upsert_pipe({"name": name, "remote": "bench", "options": {"dir": "csv"}})
                    dc.run(add_pipe, name)
                    t = time.perf_counter()
                    result = pdask.pull(planner.pipe(name), client=dc)
                    runs.append(time.perf_counter() - t)
                if len(result) != files:
                    raise RuntimeError(f"fan-out pull moved {len(result)} files, expected {files}")
        finally:
            dc.run(stop)
    return statistics.median(runs)


def run(args: argparse.Namespace, base: Path) -> dict[str, float]:
    import dask.dataframe as dd
    import fsspec
    import pandas as pd

    from pipedaemon_sdk.fsspec import PipedaemonFileSystem, PipeFileSystem

    for proto, cls in (("pipedaemon", PipedaemonFileSystem), ("pipe", PipeFileSystem)):
        fsspec.register_implementation(proto, cls, clobber=True)
    out: dict[str, float] = {}
    with servers.s3_server() as s3:
        bucket = servers.s3_bucket(s3)
        make_data(s3, bucket, base, args)
        daemon = Daemon(base)
        try:
            spec = servers.s3_spec(s3, bucket)
            settings = {"name": "bench", "protocol": "s3", "options": spec["options"],
                        "credentials": spec["credentials"]}
            c = daemon.client
            c.update_profile_config({"filerepo": str(base / "repo")})
            c.upsert_remote(settings)
            c.upsert_pipe({"name": "data", "remote": "bench", "options": {"dir": "data"}})
            c.upsert_pipe({"name": "csvset", "remote": "bench", "options": {"dir": "csv"}})
            s3opts = {"key": s3.aws_access_key_id, "secret": s3.aws_secret_access_key,
                      "client_kwargs": {"endpoint_url": s3.endpoint_url, "region_name": s3.region}}
            cols = ["c0", "c5"]
            out["parquet_pipe_s"] = median_s(lambda: pd.read_parquet("pipe://data/big.parquet", columns=cols),
                                              args.repeat)
            out["parquet_s3fs_s"] = median_s(lambda: pd.read_parquet(
                f"s3://{bucket}/data/big.parquet", columns=cols, storage_options=s3opts), args.repeat)
            print(f"parquet: pipe {out['parquet_pipe_s']:.2f} s, s3fs {out['parquet_s3fs_s']:.2f} s")

            def csv(url: str, **so: Any) -> None:
                n = len(dd.read_csv(url, storage_options=so or None).compute(scheduler="threads"))
                if n != 20 * args.csv_files:
                    raise RuntimeError(f"read {n} rows from {url}")

            out["csv_pipe_s"] = median_s(lambda: csv("pipe://csvset/*.csv"), args.repeat)
            out["csv_s3fs_s"] = median_s(lambda: csv(f"s3://{bucket}/csv/*.csv", **s3opts), args.repeat)
            print(f"csv: pipe {out['csv_pipe_s']:.2f} s, s3fs {out['csv_s3fs_s']:.2f} s", flush=True)
            for workers in (1, 2):
                out[f"fan{workers}_s"] = fan_out(base, settings, workers, args.csv_files, args.repeat)
                print(f"fan-out pull, {workers} worker(s): {out[f'fan{workers}_s']:.2f} s", flush=True)
        finally:
            daemon.stop()
    return out


def render(out: dict[str, float], args: argparse.Namespace, command: str) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reduced = args.parquet_mib != 512 or args.csv_files != 2000
    size = (f"a {args.parquet_mib} MiB parquet file (8 float columns; 2 read) and {args.csv_files:,} CSV "
            "files of 20 rows")
    rows = [("pandas read_parquet, 2 of 8 columns", out["parquet_pipe_s"], "s3fs", out["parquet_s3fs_s"]),
            ("dask read_csv of the dataset (threads)", out["csv_pipe_s"], "s3fs", out["csv_s3fs_s"]),
            ("Dask fan-out pull of the dataset, 2 workers", out["fan2_s"], "1 worker", out["fan1_s"])]
    lines = [SECTION, "",
             f"Reading {size} from one moto S3 server: through `pipe://` (the daemon) and through s3fs; "
             f"and `pipedaemon_sdk.dask.pull` of the CSV dataset with 1 and 2 workers (each its own daemon). "
             f"Median of {args.repeat} runs; ratio = other / pipedaemon (above 1: pipedaemon is faster).", "",
             f"- date: {now}; command: `{command}`" + (" (REDUCED size: the machine was shared; the defaults "
                                                      "are 512 MiB and 2,000 files)" if reduced else ""),
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
             "moto_server on loopback, shared with other work (figures are indicative)", "",
             "| case | pipedaemon s | compared with | its s | ratio |", "| --- | ---: | --- | ---: | ---: |"]
    for what, mine, other, theirs in rows:
        lines.append(f"| {what} | {mine:.2f} | {other} | {theirs:.2f} | {theirs / mine:.2f} |")
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="pd-bench-fsspec-", dir="/tmp") as tmp:
        out = run(args, Path(tmp))
    command = "python -m bench fsspec " + " ".join(argv or [])
    text = render(out, args, command.strip())
    print(text)
    if args.write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
