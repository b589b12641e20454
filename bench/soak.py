"""`make soak`: the long forms of the fault campaign and the crash loop, and their figures.

Runs, with ``PIPEDAEMON_SOAK=1`` (tests/support/soak.py): the fault campaign (200 seeded runs per
protocol: S3, SFTP, FTP), the crash loop (at least 50 kills on S3 and 20 on SFTP), the
wire and params fuzzers with 25 times their examples, and the load suite with 64 clients
x 200 requests. Each suite appends what it did to a JSON-lines report; this script sums
it up and writes the figures into docs/reliability.md, between the markers
``<!-- soak:NAME -->`` and ``<!-- /soak:NAME -->`` of its sections (faults, crashes,
fuzz, load); nothing else in that shared file is touched.

    python -m bench.soak [--workers N] [--no-docs] [--report FILE] [extra pytest args]
    python -m bench.soak --from-report FILE    # only write the figures of an earlier run

It is not one of ``python -m bench``'s benchmarks: it runs for an hour or more.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
SUITES = ["tests/reliability/test_faults_campaign.py::test_fault_campaign",
          "tests/reliability/test_crash_loop.py", "tests/reliability/test_fuzz_wire.py",
          "tests/reliability/test_fuzz_params.py", "tests/reliability/test_load.py"]
CODES = {"1008": "StorageError", "1009": "ChecksumMismatch"}


def run_suites(report: Path, workers: int, extra: list[str]) -> int:
    env = {**os.environ, "PIPEDAEMON_SOAK": "1", "PIPEDAEMON_SOAK_REPORT": str(report)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", "-n", str(workers),
           *SUITES, *extra]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def load(report: Path) -> list[dict[str, Any]]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text().splitlines() if line.strip()]


def label(row: dict[str, Any]) -> str:
    """A row's name: its protocol, and SFTP's transport (the two are measured apart)."""
    return row["protocol"] + (f" ({row['transport']})" if row.get("transport") else "")


def faults_table(rows: list[dict[str, Any]]) -> str:
    out = ["| protocol | runs | jobs | succeeded | failed (code: count) | failed jobs re-run clean | "
           "rule broken | connections | given a fault | faults that took effect |",
           "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in sorted((r for r in rows if r["suite"] == "faults"), key=label):
        outcomes = collections.Counter[str]()
        for k, v in r["outcomes"].items():
            outcomes[k.split(" ", 1)[1]] += v
        ok = outcomes.pop("succeeded", 0)
        failed = ", ".join(f"{c} {CODES.get(c, '')}: {n}" for c, n in sorted(outcomes.items())) or "none"
        faults = dict(r["faults"])
        dropped = faults.pop("drop_idle", 0)
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(faults.items(), key=lambda kv: -kv[1]) if v)
        kinds += f"; and {dropped} open connections reset between runs" if dropped else ""
        fired = sum(faults.values())
        broken = len(r.get("violations", []))
        name = label(r) + (f" ({r['note']})" if r.get("note") else "")  # e.g. a re-run after a fix
        out.append(f"| {name} | {r['runs']} | {r['jobs']} | {ok} | {failed} | {r['healed']} | "
                   f"{broken} | {r['connections']} | {r['assigned']} | {fired} ({kinds}) |")
    broken = [f"- {v[:300]}" for r in rows for v in r.get("violations", [])]
    return "\n".join(out + (["", *broken] if broken else []))


def crashes_table(rows: list[dict[str, Any]]) -> str:
    mib = 1 << 20
    out = ["| protocol | rounds | kills | jobs succeeded | moved | sent again on the wire (up / down) | "
           "worst per kill | bound per kill | at moto: parts stored twice |",
           "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in sorted((r for r in rows if r["suite"] == "crash"), key=label):
        moto = "-"
        if r["protocol"] == "s3":
            moto = (f"{r.get('resent_up_requests', 0)} ({r.get('resent_up_moto', 0) / mib:.0f} MiB); "
                    f"{r.get('gets', 0)} GETs for {r.get('objects_pulled', 0)} objects")
        out.append(f"| {label(r)} | {r['rounds']} | {r['kills']} | {r['succeeded']} of {r['jobs']} | "
                   f"{r['bytes_moved'] / mib:.0f} MiB | {r['resent_up_wire'] / mib:.1f} / "
                   f"{r['resent_down_wire'] / mib:.1f} MiB | {r['worst_wire_per_kill'] / mib:.1f} MiB | "
                   f"{r['bound_per_kill'] / mib:.0f} MiB | {moto} |")
    return "\n".join(out)


def fuzz_table(rows: list[dict[str, Any]]) -> str:
    """Inputs per fuzz suite, summed over the xdist workers that ran its tests."""
    suites: dict[str, collections.Counter[str]] = {}
    for r in rows:
        if r["suite"] == "fuzz":
            suites.setdefault(r["name"], collections.Counter()).update(r["counts"])
    out = ["| suite | inputs | of which |", "| --- | ---: | --- |"]
    for name, counts in sorted(suites.items()):
        parts = ", ".join(f"{k} {v:,}" for k, v in counts.most_common() if v)
        out.append(f"| {name} | {sum(counts.values()):,} | {parts} |")
    return "\n".join(out)


def load_table(rows: list[dict[str, Any]]) -> str:
    out = ["| clients x requests | transfer jobs | answered | errors | requests/s | "
           "latency p50 / p99 / max | daemon RSS before / peak | jobs that stood still |",
           "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    for r in (r for r in rows if r["suite"] == "load"):
        out.append(f"| {r['clients']} x {r['requests_each']} | {r['jobs']} | {r['answered']:,} | "
                   f"{r['errors']} | {r['req_per_s']:,} | {r['p50_ms']} / {r['p99_ms']} / {r['max_ms']} ms | "
                   f"{r['rss_base_mib']} / {r['rss_peak_mib']} MiB | {r['stalls']} |")
    lines = [*out, ""]
    for r in (r for r in rows if r["suite"] == "never_reads"):
        lines.append(f"A client that does not read asked for {r['asked']} answers of {r['answer_mib']} MiB, "
                     f"one after another: the daemon stopped reading its requests, and its memory grew "
                     f"by at most {r['grown_mib']} MiB meanwhile.")
    return "\n".join(lines)


def stamp(elapsed: float | None) -> str:
    took = f", {elapsed / 60:.0f} min" if elapsed else ""
    return (f"Latest soak: {time.strftime('%Y-%m-%d')}, {platform.machine()} with {os.cpu_count()} CPUs"
            f"{took}; `make soak` (`python -m bench.soak`).")


def write_block(doc: Path, marker: str, text: str) -> None:
    """Replace what is between ``<!-- marker -->`` and ``<!-- /marker -->`` (they must exist)."""
    current = doc.read_text()
    begin, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if begin not in current or end not in current:
        raise SystemExit(f"{doc}: markers {begin} ... {end} not found")
    head, rest = current.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


def write_docs(rows: list[dict[str, Any]], elapsed: float | None) -> None:
    if any(r["suite"] == "faults" for r in rows):
        write_block(DOC, "soak:faults", stamp(elapsed) + "\n\n" + faults_table(rows))
    if any(r["suite"] == "crash" for r in rows):
        write_block(DOC, "soak:crashes", stamp(elapsed) + "\n\n" + crashes_table(rows))
    if any(r["suite"] == "fuzz" for r in rows):
        write_block(DOC, "soak:fuzz", stamp(elapsed) + "\n\n" + fuzz_table(rows))
    if any(r["suite"] == "load" for r in rows):
        write_block(DOC, "soak:load", stamp(elapsed) + "\n\n" + load_table(rows))


def soak(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=4, help="pytest-xdist workers (default 4)")
    ap.add_argument("--no-docs", action="store_true", help="print the figures; leave docs alone")
    ap.add_argument("--report", type=Path, help="where the suites write their JSON lines")
    ap.add_argument("--from-report", type=Path, help="skip the run; use this report")
    args, extra = ap.parse_known_args(argv)
    started = time.monotonic()
    status = 0
    if args.from_report:
        report = args.from_report
    else:
        report = args.report or Path(tempfile.mkstemp(prefix="pd-soak-", suffix=".jsonl")[1])
        status = run_suites(report, args.workers, extra)
    rows = load(report)
    print(faults_table(rows), crashes_table(rows), fuzz_table(rows), load_table(rows), sep="\n\n")
    print(f"report: {report}")
    if not args.no_docs and rows:
        write_docs(rows, None if args.from_report else time.monotonic() - started)
    return status


if __name__ == "__main__":
    raise SystemExit(soak(sys.argv[1:]))
