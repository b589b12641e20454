"""Load: 64 clients at once while 16 throttled transfer jobs run, and clients that never read.

The short form here makes 64 x 25 requests; the soak's (``make soak``) 64 x 200, and
bench/soak.py writes its figures to docs/reliability.md. Latencies are printed, never asserted; what is
asserted: every request answered without error, every job finished and advanced between
every two progress samples while running, and the daemon's memory stayed bounded.

Back-pressure (pipedaemon/server.py, Connection.send): a client more than 1 MiB behind
loses progress events (answers are never dropped); one more than 64 MiB behind is
disconnected. Both are shown with a client that watches a busy job and asks for large
answers without reading them.
"""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipedaemon import server
from tests.reliability.load_helpers import LOAD_ENV, LoadConfig, run_load
from tests.support import soak
from tests.support.hostile import Conn, Sandbox, rss_kib, sandbox
from tests.support.soak import SOAK
from tests.support.spine import Raw, sparse_file

MiB = 1 << 20
BIG = 12 * MiB  # one answer this large is far past the 1 MiB event-drop threshold


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with sandbox("pd-load-", env=LOAD_ENV) as b:
        yield b


def test_many_clients_while_jobs_run(box: Sandbox) -> None:
    # Each job is held to its own bandwidth limit, and its file is large enough for parallel
    # chunks (so jobs compete for stream slots) and to outlast the clients' requests.
    requests, file_mib, bps = (200, 40, MiB) if SOAK else (25, 20, 4 * MiB)
    cfg = LoadConfig(clients=64, requests=requests, jobs=16, file_mib=file_mib, job_bps=bps, procs=4,
                     sample_s=2.0)
    result = run_load(box.sock, box.st.pid, box.base, cfg)
    summary = result.summary()
    print("\nload:", json.dumps(summary))
    soak.report({"suite": "load", **summary})
    assert result.errors == []
    assert result.answered == cfg.clients * cfg.requests
    assert set(result.job_states.values()) == {"succeeded"}, result.job_states
    running = [s for s in result.samples if any(st == "running" for st, _ in s.values())]
    assert len(running) >= 2, "the jobs were sampled while they ran"
    assert result.stalls == [], result.stalls
    # Generous: the clients' connections and 16 jobs' buffers, not a leak per request.
    assert result.rss_peak_kib < result.rss_base_kib + 256 * 1024, summary
    box.pinger.check()


# -- clients that never read ------------------------------------------------------------------
def pipe_of(box: Sandbox, name: str, description_bytes: int) -> str:
    """A pipe whose description is that large: each pipe.get answer is twice that (its
    settings and its effective settings both hold it)."""
    raw = Conn(box.sock)
    if "result" not in raw.call("remote.get", {"name": "bp"}):
        (box.base / "bp-remote").mkdir(exist_ok=True)
        raw.call("remote.upsert", {"settings": {"name": "bp", "protocol": "local",
                                                "options": {"remotepath": f"{box.base}/bp-remote/"}}})
    settings = {"name": name, "remote": "bp", "description": "d" * description_bytes}
    res = raw.call("pipe.upsert", {"settings": settings})
    assert "result" in res, res
    raw.close()
    return name


@pytest.fixture(scope="module")
def big_pipe(box: Sandbox) -> str:
    return pipe_of(box, "big", BIG)


def readable(s: socket.socket) -> int:
    """Bytes waiting in our receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def busy_job(box: Sandbox, watcher: Raw) -> str:
    """A long hash job the watcher started (so it gets its progress events, 10 a second)."""
    path = sparse_file(box.base / "huge.bin", 256 * 2**30)
    job = watcher.call("hash.file", {"path": str(path), "algorithm": "md5"}, rid="job")["result"]
    assert watcher.msg()["method"] == "job.progress"
    return job["id"]


def bytes_done(box: Sandbox, job_id: str) -> int:
    r = Raw(box.sock)
    try:
        return r.call("job.get", {"job_id": job_id})["result"]["progress"]["bytes_done"]
    finally:
        r.close()


def cancel(box: Sandbox, job_id: str) -> None:
    r = Raw(box.sock)
    assert r.call("job.cancel", {"job_id": job_id})["result"]["state"] == "cancelled"
    r.close()


def drain(s: socket.socket, until: Callable[[list[bytes]], bool] | None = None) -> list[bytes]:
    """What the daemon sends, as lines: until it closes, stops sending for 10 s, or ``until``
    holds for the lines so far (a watcher of a running job never sees silence)."""
    data = bytearray()
    s.settimeout(10)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(1 << 20)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        if until is not None and b"\n" in chunk and until(bytes(data).split(b"\n")[:-1]):
            break
    return bytes(data).split(b"\n")[:-1]


class PeakRss(threading.Thread):
    """The daemon's highest VmRSS while a test runs (the lifetime VmHWM mixes in other tests)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, rss_kib(pid), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))


def ask_big(s: socket.socket, rid: str, name: str) -> None:
    req = {"jsonrpc": "2.0", "id": rid, "method": "pipe.get", "params": {"name": name}}
    s.sendall(json.dumps(req).encode() + b"\n")


def test_a_slow_reader_loses_progress_events_not_answers(box: Sandbox, big_pipe: str) -> None:
    watcher = Conn(box.sock)
    job_id = busy_job(box, watcher)
    peak = PeakRss(box.st.pid)
    before = peak.peak
    peak.start()
    ask_big(watcher.s, "big", big_pipe)
    while readable(watcher.s) == 0:  # the answer is being written: the rest of it waits in the daemon
        time.sleep(0.01)
    b1 = bytes_done(box, job_id)
    time.sleep(1.0)  # ~10 progress intervals: each event made now finds the client > 1 MiB behind
    b2 = bytes_done(box, job_id)
    def caught_up(lines: list[bytes]) -> bool:  # the answer, then an event made after b2
        got = [json.loads(x) for x in lines]
        answered = any(m.get("id") == "big" for m in got)
        return answered and any(m.get("method") == "job.progress" and m["params"]["bytes_done"] >= b2
                                for m in got)

    lines = drain(watcher.s, caught_up)  # now read: the answer whole, and the events that were kept
    peak.stop.set()
    cancel(box, job_id)
    msgs = [json.loads(x) for x in lines]
    answers = [m for m in msgs if m.get("id") == "big"]
    assert len(answers) == 1 and len(answers[0]["result"]["settings"]["description"]) == BIG
    events = [m["params"]["bytes_done"] for m in msgs if m.get("method") == "job.progress"]
    assert b2 > b1, "the job moved on while the client did not read"
    assert [e for e in events if b1 < e < b2] == [], "events made while the client was behind were queued"
    assert events and max(events) >= b2, "events resume once the client reads again"
    grown_mib = (peak.peak - before) // 1024
    assert grown_mib < 8 * BIG // MiB, f"the daemon grew {grown_mib} MiB holding one {BIG // MiB} MiB answer"
    watcher.close()
    box.pinger.check()


def test_a_client_that_does_not_read_is_not_read_from(box: Sandbox) -> None:
    """Past 1 MiB waiting for it, a client's next requests stay in its socket: the daemon
    builds no answer for them (found by the soak: answers piled up for a client that asked
    one after another and never read)."""
    answer = 4 * MiB  # each answer; the requests below would add up to twice the disconnect limit
    name = pipe_of(box, "medium", answer // 2)
    hog = Conn(box.sock)
    assert len(hog.call("pipe.get", {"name": name})["result"]["settings"]["description"]) == answer // 2
    peak = PeakRss(box.st.pid)
    before = peak.peak
    peak.start()
    asks = 2 * server.MAX_BUFFER // answer
    ask_big(hog.s, "a0", name)
    while readable(hog.s) < 64 << 10:  # the first answer is being written: the client is behind now
        time.sleep(0.01)
    for n in range(1, asks):
        ask_big(hog.s, f"a{n}", name)
        time.sleep(0.05)  # time for the daemon to answer each one, if it read them
    time.sleep(1.0)
    grown_mib = (peak.peak - before) // 1024
    peak.stop.set()
    # Had the daemon read every request, it would have queued asks x answer (twice the limit)
    # and disconnected the client: the log says it did not. Its RSS grew by a few answers (the
    # one queued, one read meanwhile, the allocator's slack under load), far below asks x answer.
    assert "disconnecting a client" not in box.log(), "it read the requests and reached the limit"
    assert grown_mib < asks * answer // MiB // 2, \
        f"the daemon grew {grown_mib} MiB for a client that did not read"
    first = drain(hog.s, lambda lines: len(lines) >= 1)
    assert json.loads(first[0])["id"] == "a0"
    hog.close()
    print(f"\nclient that does not read: {asks} answers of {answer // MiB} MiB asked one by one; "
          f"daemon RSS grew at most {grown_mib} MiB")
    soak.report({"suite": "never_reads", "asked": asks, "answer_mib": answer // MiB, "grown_mib": grown_mib})
    box.pinger.check()


def test_a_burst_past_64_mib_is_disconnected(box: Sandbox, big_pipe: str) -> None:
    """Requests sent all at once are read before any answer waits; when their answers pass
    64 MiB queued, the client is disconnected instead of the daemon holding more."""
    hog = Conn(box.sock)
    burst = server.MAX_BUFFER // BIG + 3
    reqs = [{"jsonrpc": "2.0", "id": f"b{n}", "method": "pipe.get", "params": {"name": big_pipe}}
            for n in range(burst)]
    hog.s.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in reqs))
    delivered = [x for x in drain(hog.s) if x.startswith(b'{"jsonrpc":"2.0","id":"b')]
    hog.close()
    assert len(delivered) < burst, "every answer was delivered: the limit never applied"
    assert "disconnecting a client that stopped reading" in box.log()
    box.pinger.check()


def test_back_pressure_limits_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    assert "1 MiB" in doc and "64 MiB" in doc, "docs/reliability.md states the back-pressure limits"
    assert server.EVENT_DROP_BYTES == 1 << 20 and server.MAX_BUFFER == 64 << 20

