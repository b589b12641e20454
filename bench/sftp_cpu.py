"""SFTP transports' CPU per GiB, without the daemon: where each design spends it.

    python -m bench sftp_cpu [--mib 256] [--rounds 1]

The SFTP backend runs in this process (uvloop), moving ``--mib`` MiB from memory to a
local sshd and back, once per transport; then OpenSSH's ``sftp`` (default and
``-B 255k -R 256``) moves the same. CPU seconds per GiB are reported for this process
("own": the backend's Python side) and for its children (the OpenSSH transport's ssh
processes, reaped at close; ``sftp`` and its ssh), which contention on a shared machine
hardly moves, unlike MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench import servers
from tests.servers.sftp import SSHDServer, make_spec

MiB = 1 << 20


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _fill(path: str | Path, size: int, block: bytes) -> None:
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)


async def _backend(server: SSHDServer, transport: str, size: int, up: bool) -> tuple[float, float, float]:
    from pipedaemon.backends.base import backend_class

    spec = make_spec(server)
    b: Any = backend_class("sftp")({**spec["options"], "transport": transport}, spec["credentials"])
    await b.connect()
    block, path = os.urandom(MiB), spec["root"] + "big.bin"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(size // MiB):
            yield block

    if not up:
        _fill(path, size, block)
    own0, kids0, t0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), time.monotonic()
    if up:
        await b.write(path, chunks())
    else:
        got = 0
        async for piece in b.read(path):
            got += len(piece)
        assert got == size
    wall, own = time.monotonic() - t0, _cpu(resource.RUSAGE_SELF) - own0
    await b.close()  # reaps the ssh processes: their CPU joins RUSAGE_CHILDREN
    os.unlink(path)
    return wall, own, _cpu(resource.RUSAGE_CHILDREN) - kids0


def _sftp(server: SSHDServer, size: int, up: bool, tuned: bool) -> tuple[float, float, float]:
    spec = make_spec(server)
    local, remote = Path(spec["root"]) / "local.bin", spec["root"] + "big.bin"
    _fill(local if up else remote, size, os.urandom(MiB))
    argv = ["sftp", "-q", "-b", "-", "-P", str(server.port), "-i", str(server.client_key),
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={server.known_hosts}",
            *(["-B", "261120", "-R", "256"] if tuned else []), f"{server.username}@{server.host}"]
    batch = f"put {local} {remote}" if up else f"get {remote} {local}"
    kids0, t0 = _cpu(resource.RUSAGE_CHILDREN), time.monotonic()
    subprocess.run(argv, input=batch.encode(), check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    kids = _cpu(resource.RUSAGE_CHILDREN) - kids0
    local.unlink(missing_ok=True)
    Path(remote).unlink(missing_ok=True)
    return wall, 0.0, kids


async def _run(args: argparse.Namespace) -> None:
    size, gib = args.mib * MiB, args.mib / 1024
    with servers.sftp_server() as server:
        for up in (False, True):
            for _ in range(args.rounds):
                for name in ("openssh", "asyncssh", "sftp", "sftp -B 255k -R 256"):
                    if name.startswith("sftp"):
                        wall, own, kids = _sftp(server, size, up, tuned="-B" in name)
                    else:
                        wall, own, kids = await _backend(server, name, size, up)
                    print(f"{'upload  ' if up else 'download'} {name:20} {size / wall / 1e6:7.1f} MB/s  "
                          f"own {own / gib:5.2f}  children {kids / gib:5.2f}  total {(own + kids) / gib:5.2f}"
                          f" CPU-s/GiB  load {os.getloadavg()[0]:.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench sftp_cpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="MiB moved each way (default 256)")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    import uvloop

    uvloop.install()
    asyncio.run(_run(args))
    return 0
