"""The fault campaign: seeded faults between the daemon and a real server, mixed pulls and pushes.

Each round (one seed) makes two pipes on a remote that reaches its server through a
FaultProxy: one pushes local files to ``push<seed>/``, the other pulls files put on
the server directly (around the proxy) under ``pull<seed>/``; both jobs run at once
while the proxy applies the seed's schedule to every new connection. Then the
schedule goes back to "pass" and the round is judged:

- a job that succeeded: every file byte-identical on the other side;
- a job that failed: a documented code (1008 retries exhausted, 1009 checksum); every
  file under a final name is whole (byte-identical), and after ``daemon.cleanup`` (the
  janitor's sweep) no temporary name is left on either side and no multipart upload on S3;
- then the failed job is run again without faults and must finish byte-identical.
"""

from __future__ import annotations

import collections
import io
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipedaemon_sdk import DaemonError, PipeClient
from tests.support.faultproxy import Action, FaultProxy
from tests.support.pipes import Storage
from tests.support.soak import report

KiB, MiB = 1 << 10, 1 << 20
DOCUMENTED = {1008: "StorageError", 1009: "ChecksumMismatch"}  # what a fault may end a job with
TIMEOUT_S = 1.5  # the daemon's storage timeouts during the campaign
STALL_S = 4.0  # a stall outlasts them
JOB_WAIT_S = 600.0  # a hang guard, not a speed requirement

# Fault kinds each protocol gets. FTP has no checksum: a flipped bit on its data connection
# would go unnoticed (as it would on any plain FTP link), so corruption is not in its mix;
# SSH's MAC catches it for SFTP, and the ETag/part md5s catch it for S3.
COMMON = ("reset_after", "truncate_after", "stall_after", "slow",
          "reset_after_up", "truncate_after_up", "stall_after_up")
KINDS = {"s3": (*COMMON, "http_status", "corrupt_every"), "sftp": (*COMMON, "corrupt_every"), "ftp": COMMON}


# Chance that a new connection gets a fault, one of three per seed. SFTP keeps its (two) SSH
# connections for the whole run, so most of them must carry a fault for faults to happen at all;
# S3 and FTP open many (HTTP keep-alive pool, an FTP data connection per transfer).
PROBS = {"s3": (0.1, 0.3, 0.6), "ftp": (0.1, 0.3, 0.6), "sftp": (0.5, 0.8, 1.0)}
# Where a byte-counted fault strikes: log-uniform between 10**a and 10**b bytes into the connection
# (headers, handshakes, mid-chunk; SFTP's connections carry whole runs).
SPAN = {"s3": (2, 7.3), "ftp": (2, 7.3), "sftp": (3, 7.8)}


def schedule(protocol: str, seed: int) -> tuple[float, Callable[[int], Action]]:
    """The seed's fault probability and its action for connection n (a pure function of both)."""
    prob = random.Random(seed).choice(PROBS[protocol])
    kinds = KINDS[protocol]

    def action(n: int) -> Action:
        rng = random.Random(f"{protocol}:{seed}:{n}")
        if rng.random() >= prob:
            return ("pass",)
        kind = rng.choice(kinds)
        at = int(10 ** rng.uniform(*SPAN[protocol]))
        if kind in ("reset_after", "truncate_after", "reset_after_up", "truncate_after_up"):
            return (kind, at)
        if kind in ("stall_after", "stall_after_up"):
            return (kind, at, STALL_S)
        if kind == "slow":
            return (kind, rng.choice((2, 4, 8)) * MiB)
        if kind == "http_status":
            return (kind, rng.choice((500, 503)))
        return (kind, rng.choice((64 * KiB, 1 * MiB, 4 * MiB)))  # corrupt_every

    return prob, action


def server_for(request: Any, protocol: str) -> tuple[dict[str, Any], Storage, int]:
    """A fresh scratch folder (bucket) on the protocol's test server: its spec, direct access to
    its files, and the server's port (for a proxy)."""
    spec = request.getfixturevalue(f"{protocol}_spec")
    if protocol == "s3":
        port = int(spec["options"]["endpoint_url"].rsplit(":", 1)[1])
        return spec, Storage("s3", spec, request.getfixturevalue("s3_client")), port
    disk = request.getfixturevalue("ftp_server").root_dir if protocol == "ftp" else None
    return spec, Storage(protocol, spec, None, disk), int(spec["options"]["port"])


def proxied(spec: dict[str, Any], proxy: FaultProxy) -> dict[str, Any]:
    """The spec of the same remote reached through ``proxy``, with short timeouts."""
    options = dict(spec["options"])
    if spec["protocol"] == "s3":
        options.update(endpoint_url=f"http://127.0.0.1:{proxy.port}", read_timeout=TIMEOUT_S,
                       connect_timeout=TIMEOUT_S)
    elif spec["protocol"] == "sftp":
        options.update(port=proxy.port, known_hosts="accept-new", connect_timeout=TIMEOUT_S)
    else:
        options.update(port=proxy.port, connect_timeout=TIMEOUT_S, timeout=TIMEOUT_S)
    return {**spec, "options": options}


def make_files(rng: random.Random) -> dict[str, bytes]:
    """A few small files and one or two multi-part ones (>= 16 MiB: parallel 8 MiB chunks)."""
    files = {f"small{i}.bin": rng.randbytes(rng.randint(0, 512 * KiB)) for i in range(rng.randint(2, 4))}
    files["sub/mid.bin"] = rng.randbytes(rng.randint(1, 3) * MiB + rng.randint(0, KiB))
    for i in range(rng.randint(1, 2)):
        files[f"big{i}.bin"] = rng.randbytes(16 * MiB + rng.randint(1, 4 * MiB))
    return files


def seed_remote(storage: Storage, folder: str, files: dict[str, bytes]) -> None:
    """Put files on the server directly; big S3 objects as 8 MiB-part multipart uploads."""
    for name, data in files.items():
        if storage.kind == "s3" and len(data) > 8 * MiB:
            from boto3.s3.transfer import TransferConfig

            cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
            storage.s3.upload_fileobj(io.BytesIO(data), storage.bucket, folder + name, Config=cfg)
        else:
            storage.put(folder + name, data)


def remote_files(storage: Storage, folder: str) -> dict[str, bytes]:
    names = sorted(n[len(folder):] for n in storage.names() if n.startswith(folder))
    return {n: storage.read(folder + n) for n in names}


def local_files(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Tally:
    """What a campaign did: runs, faults that took effect, job outcomes."""

    protocol: str
    transport: str | None = None  # SFTP's: "openssh" or "asyncssh", reported apart
    runs: int = 0
    jobs: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)  # took effect
    violations: list[str] = field(default_factory=list)  # seeds whose run broke a rule (soak goes on)
    connections: int = 0  # connections through the proxy (FTP: control and data)
    assigned: int = 0  # of them, how many were handed a fault
    healed: int = 0

    def record(self) -> None:
        """This tally into the soak's report (tests/support/soak.py)."""
        report({"suite": "faults", "protocol": self.protocol, "transport": self.transport,
                "runs": self.runs, "jobs": self.jobs,
                "outcomes": dict(self.outcomes), "faults": dict(self.faults),
                "connections": self.connections, "assigned": self.assigned, "healed": self.healed,
                "violations": self.violations})


@dataclass
class Round:
    client: PipeClient
    proxy: FaultProxy
    storage: Storage
    seed: int
    tally: Tally

    def run(self) -> None:
        rng = random.Random(self.seed)
        push_files, pull_files = make_files(rng), make_files(rng)
        up, dn = f"up{self.seed}", f"dn{self.seed}"
        seed_remote(self.storage, f"pull{self.seed}/", pull_files)
        self.client.upsert_pipe({"name": up, "remote": "r", "options": {"dir": f"push{self.seed}"}})
        self.client.upsert_pipe({"name": dn, "remote": "r", "options": {"dir": f"pull{self.seed}"}})
        push_pipe, pull_pipe = self.client.pipe(up), self.client.pipe(dn)
        for name, data in push_files.items():
            path = push_pipe.dirpath / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        fired, assigned = len(self.proxy.fired), len(self.proxy.faults)
        _, action = schedule(self.storage.kind, self.seed)
        start = self.proxy.connections
        self.proxy.set_schedule(lambda n: action(n - start))
        # The daemon's pooled connections die too (as idle ones do), so every connection of the
        # round draws from this seed's schedule.
        self.tally.faults["drop_idle"] += self.proxy.drop_all()
        self.errors: dict[str, str] = {}
        try:
            jobs = {"push": push_pipe.push(wait=False), "pull": pull_pipe.pull(wait=False)}
            codes = {op: _outcome(job, self.errors) for op, job in jobs.items()}
        finally:
            self.proxy.set_schedule(lambda n: ("pass",))
        # A stalled connection still holds what the daemon sent on it; at its end the server may
        # act on it (moto runs a request whose headers were cut): let that land before judging.
        self.proxy.wait_quiet(STALL_S + 5)
        self.tally.connections += self.proxy.connections - start
        self.tally.assigned += len(self.proxy.faults) - assigned
        for a in self.proxy.fired[fired:]:
            self.tally.faults[a[0] if a[0] != "http_status" else f"http_{a[1]}"] += 1
        self.tally.runs += 1
        self.tally.jobs += 2
        for op, code in codes.items():
            self.tally.outcomes[f"{op} " + ("succeeded" if code is None else str(code))] += 1
        self._judge(codes, push_pipe.dirpath, pull_pipe.dirpath, push_files, pull_files)
        for op, pipe in (("push", push_pipe), ("pull", pull_pipe)):
            if codes[op] is not None:  # the same job without faults finishes the work
                getattr(pipe, op)()
                self.tally.healed += 1
        healthy: dict[str, int | None] = {"push": None, "pull": None}
        self._judge(healthy, push_pipe.dirpath, pull_pipe.dirpath, push_files, pull_files)
        self._discard(push_pipe.dirpath, pull_pipe.dirpath, up, dn)

    def _discard(self, push_dir: Path, pull_dir: Path, *pipes: str) -> None:
        """A round that kept every rule leaves nothing behind: 200 rounds kept 12 GB per
        protocol and filled the disk mid-soak. A round that broke one keeps its files."""
        prefixes = (f"push{self.seed}/", f"pull{self.seed}/")
        for name in self.storage.names():
            if name.startswith(prefixes):
                self.storage.delete(name)
        for folder in (push_dir, pull_dir):
            shutil.rmtree(folder, ignore_errors=True)
        for pipe in pipes:
            self.client.delete_pipe(pipe)

    def _judge(self, codes: dict[str, int | None], push_dir: Path, pull_dir: Path,
               push_files: dict[str, bytes], pull_files: dict[str, bytes]) -> None:
        where = f"{self.storage.kind} seed {self.seed}"
        for op, code in codes.items():
            assert code is None or code in DOCUMENTED, \
                f"{where}: {op} failed with undocumented {code}: {self.errors}"
        # What the storage refused to clean up while it failed (an abort, a temporary file's
        # delete) is the janitor's; it runs at start, every 5 minutes and on daemon.cleanup.
        self.client.call("daemon.cleanup", {})
        pushed = remote_files(self.storage, f"push{self.seed}/")
        pulled = local_files(pull_dir)
        for got, sent, op in ((pushed, push_files, "push"), (pulled, pull_files, "pull")):
            temps = [n for n in got if ".pdpart" in n]
            assert temps == [], f"{where}: {op} left temporary files {temps}"
            for name, data in got.items():  # a final name only ever holds the whole file
                assert name in sent and data == sent[name], \
                    f"{where}: {op} ({codes[op]}) left a bad {name}: {_diff(data, sent.get(name, b''))}"
            if codes[op] is None:
                assert set(got) == set(sent), f"{where}: {op} succeeded without {set(sent) - set(got)}"
        if self.storage.kind == "s3":
            listed = self.storage.s3.list_multipart_uploads(Bucket=self.storage.bucket).get("Uploads", [])
            uploads = [(u["Key"], u["UploadId"]) for u in listed
                       if u["Key"].startswith(f"push{self.seed}/")]  # this round's
            assert uploads == [], f"{where}: multipart uploads left: {uploads}"


def _outcome(job: Any, errors: dict[str, str]) -> int | None:
    """None when the job succeeded, else its error code (and its message in ``errors``)."""
    try:
        job.wait(timeout=JOB_WAIT_S)
    except DaemonError as err:
        errors[job.id] = err.message
        return err.code
    return None


def _diff(got: bytes, want: bytes) -> str:
    pairs = enumerate(zip(got, want, strict=False))
    first = next((i for i, (a, b) in pairs if a != b), min(len(got), len(want)))
    return f"{len(got)} bytes for {len(want)}, first difference at {first}"
