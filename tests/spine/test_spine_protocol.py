"""Bad input on the wire, from raw socket clients: documented errors, and nobody else suffers.

Each case checks that a second client, talking while the bad one is still connected,
is answered, and that the daemon stays the same process with nothing crashed in its log.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import PipeClient
from tests.support.spine import Raw, Started, close_started, ping_ok, start_serve


@pytest.fixture(scope="module")
def module_daemon() -> Iterator[Started]:
    """One daemon for the module (its own home and socket): bad input must not wear it down."""
    base = Path(tempfile.mkdtemp(prefix="pd-proto-", dir="/tmp"))
    env = dict(os.environ, PIPEDAEMON_HOME=str(base / "home"), PIPEDAEMON_SOCKET=str(base / "run" / "d.sock"))
    st = start_serve(base / "run" / "d.sock", env=env)
    st.extra["home"] = base / "home"
    yield st
    close_started(st)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def served(module_daemon: Started) -> Iterator[Started]:
    yield module_daemon
    # The daemon is the one we started, it still answers, and nothing crashed inside it.
    assert ping_ok(module_daemon.socket) == module_daemon.pid
    log = (module_daemon.extra["home"] / "daemon.log").read_text()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def error_of(msg: dict[str, Any], code: int, rid: Any = None) -> dict[str, Any]:
    assert msg.get("jsonrpc") == "2.0"
    assert "result" not in msg
    assert msg["error"]["code"] == code, msg
    assert msg.get("id") == rid, msg
    return msg["error"]


def still_usable(raw: Raw) -> None:
    assert raw.call("daemon.ping", rid="after")["result"]["pong"] is True


DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
DEEP_PARAMS = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":{"x":' + DEEP_ARRAY + b"}}"
BAD_UTF8 = b'{"jsonrpc":"2.0","id":"\xff","method":"daemon.ping"}'


@pytest.mark.parametrize("data", [b"hello\n", b"{\"jsonrpc\": \"2.0\", \"id\": 1,\n", b"\xff\xfe\n",
                                  b"{\"a\":1}}\n", b"\x00\x00\n", DEEP_ARRAY + b"\n", DEEP_OBJECT + b"\n",
                                  DEEP_PARAMS + b"\n", BAD_UTF8 + b"\n"],
                         ids=["text", "half", "binary", "extra-brace", "nul", "deep-array", "deep-object",
                              "deep-params", "bad-utf8"])
def test_not_json_is_parse_error_and_connection_stays(served: Started, data: bytes) -> None:
    raw = Raw(served.socket)
    raw.send(data)
    error_of(raw.msg(), -32700)
    ping_ok(served.socket)
    still_usable(raw)
    raw.close()


BATCH = b'[{"jsonrpc":"2.0","id":1,"method":"daemon.ping"}]'  # batches are not supported


@pytest.mark.parametrize("data", [b"[]", b"[1, 2]", BATCH, b"42", b'"ping"', b"null", b"true"])
def test_array_or_scalar_is_invalid_request(served: Started, data: bytes) -> None:
    raw = Raw(served.socket)
    raw.send(data + b"\n")
    error_of(raw.msg(), -32600)
    ping_ok(served.socket)
    still_usable(raw)
    raw.close()


@pytest.mark.parametrize("req,rid", [({"jsonrpc": "2.0", "id": 7}, 7),
                                     ({"jsonrpc": "2.0", "id": "abc", "method": 5}, "abc"),
                                     ({"jsonrpc": "2.0", "method": None}, None),
                                     ({"jsonrpc": "2.0", "id": 3, "params": {}}, 3)])
def test_missing_method_is_invalid_request_with_id(served: Started, req: dict[str, Any], rid: Any) -> None:
    raw = Raw(served.socket)
    raw.send(line(req))
    err = error_of(raw.msg(), -32600, rid)
    assert err["data"]["field"] == "method"
    ping_ok(served.socket)
    still_usable(raw)
    raw.close()


@pytest.mark.parametrize("rid", [1.5, True, {}, [1]])
def test_bad_id_is_invalid_request(served: Started, rid: Any) -> None:
    raw = Raw(served.socket)
    raw.send(line({"jsonrpc": "2.0", "id": rid, "method": "daemon.ping"}))
    assert error_of(raw.msg(), -32600)["data"]["field"] == "id"
    still_usable(raw)
    raw.close()


@pytest.mark.parametrize("rid", [None, 0, -7, 2**70, "", "é-id"])
def test_any_json_rpc_id_is_echoed(served: Started, rid: Any) -> None:
    raw = Raw(served.socket)
    answer = raw.call("daemon.ping", rid=rid)
    assert answer["id"] == rid and answer["result"]["pong"] is True
    raw.close()


def test_unknown_method(served: Started) -> None:
    raw = Raw(served.socket)
    err = error_of(raw.call("daemon.nosuch", {}, rid=8), -32601, 8)
    assert err["data"]["method"] == "daemon.nosuch"
    ping_ok(served.socket)
    still_usable(raw)
    raw.close()


@pytest.mark.parametrize("method,params,field", [
    ("job.get", {"job_id": 5}, "job_id"),          # wrong type
    ("job.get", {}, "job_id"),                     # missing
    ("job.get", {"job_id": "x", "extra": 1}, "extra"),   # unknown field
    ("daemon.ping", {"x": 1}, "x"),
    ("job.list", {"limit": "ten"}, "limit"),
    ("hash.file", {"path": "/etc/hostname", "algorithm": "crc"}, "algorithm"),
    ("hash.file", {"path": "/etc/hostname\x00x"}, "path"),
    ("hash.file", {"path": "relative/name"}, "path"),
    ("hash.file", {"path": "/" + "n" * 5000}, "path"),
    ("job.list", {"state": "bogus"}, "state"),
])
def test_bad_params_name_the_field(served: Started, method: str, params: dict[str, Any], field: str) -> None:
    raw = Raw(served.socket)
    err = error_of(raw.call(method, params, rid=9), -32602, 9)
    assert err["data"]["field"] == field
    assert field in err["message"]
    ping_ok(served.socket)
    still_usable(raw)
    raw.close()


@pytest.mark.parametrize("params", [[1], "x", 3, None])
def test_params_not_an_object(served: Started, params: Any) -> None:
    raw = Raw(served.socket)
    raw.send(line({"jsonrpc": "2.0", "id": 10, "method": "job.list", "params": params}))
    error_of(raw.msg(), -32602, 10)
    still_usable(raw)
    raw.close()


def test_notification_gets_no_answer(served: Started) -> None:
    raw = Raw(served.socket)
    raw.send(line({"jsonrpc": "2.0", "method": "daemon.ping"}))
    raw.send(line({"jsonrpc": "2.0", "method": "daemon.nosuch"}))
    assert raw.call("daemon.status", rid=11)["id"] == 11  # the first line back is this answer
    raw.close()


def test_twenty_mib_line_is_refused_and_closed(served: Started) -> None:
    raw = Raw(served.socket)
    big = b'{"jsonrpc":"2.0","id":1,"method":"daemon.ping","params":{"x":"' + b"a" * (20 * 2**20) + b'"}}\n'

    def push() -> None:
        try:
            raw.send(big)
        except OSError:
            pass  # the daemon closes once it has seen enough: expected

    sender = threading.Thread(target=push, daemon=True)
    sender.start()
    err = error_of(raw.msg(), -32600)
    assert "longer" in err["message"]
    assert raw.line() == b""  # and the connection is closed
    sender.join(60)
    assert not sender.is_alive()
    raw.close()


def test_a_line_just_under_the_limit_is_read(served: Started) -> None:
    raw = Raw(served.socket)
    filler = "a" * (15 * 2**20)
    err = error_of(raw.call("daemon.ping", {"x": filler}, rid=12), -32602, 12)
    assert err["data"]["field"] == "x"
    still_usable(raw)
    raw.close()


def test_half_a_line_then_silence(served: Started) -> None:
    raw = Raw(served.socket)
    raw.send(b'{"jsonrpc":"2.0","id":13,"met')
    for _ in range(3):  # others are served meanwhile, again and again
        ping_ok(served.socket)
    raw.send(b'hod":"daemon.ping"}\n')  # the rest arrives late: still one good request
    assert raw.msg()["id"] == 13
    raw.send(b'{"jsonrpc":"2.0","id":14')
    raw.close()  # and gone for good with half a line sent


def test_client_vanishes_while_answers_are_written(served: Started) -> None:
    with PipeClient(socket_path=served.socket, auto_start=False) as c:
        size = len(json.dumps(c.call("daemon.methods")))
    n = 4 * 2**20 // size + 1  # MiBs of answers, more than the socket buffers, for a client that left
    for _ in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(served.socket))
        req = line({"jsonrpc": "2.0", "id": 1, "method": "daemon.methods"})
        s.sendall(req * n)
        s.recv(1024)  # answers are flowing
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        ping_ok(served.socket)


def test_many_requests_in_flight_on_one_connection(served: Started) -> None:
    raw = Raw(served.socket)
    n = 500
    raw.send(b"".join(line({"jsonrpc": "2.0", "id": i, "method": "daemon.ping"}) for i in range(n)))
    answers = [raw.msg() for _ in range(n)]
    ok = [a["id"] for a in answers if "result" in a]
    busy = [a for a in answers if "error" in a]
    assert all(a["error"]["code"] == 1011 for a in busy)  # a flood may be told Busy, nothing else
    assert sorted(ok + [a["id"] for a in busy]) == list(range(n))
    still_usable(raw)
    raw.close()


PROGRESS_FIELDS = {"job_id", "transfer_id", "file_name", "file_index", "file_count", "bytes_done",
                   "bytes_total", "chunk_index", "chunk_count", "rate_bps"}


def follow(raw: Raw, job_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Notifications on ``raw`` until the job's job.finished: (progress params, finished params)."""
    progress = []
    while True:
        msg = raw.msg()
        assert "id" not in msg and msg["jsonrpc"] == "2.0", msg  # notifications carry no id
        if msg["method"] == "job.progress":
            assert msg["params"]["job_id"] == job_id
            progress.append(msg["params"])
            continue
        assert msg["method"] == "job.finished"
        assert msg["params"]["id"] == job_id
        return progress, msg["params"]


def test_notifications_only_for_connections_that_asked(served: Started, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"z" * (3 * 2**20))
    idle = Raw(served.socket)
    assert "result" in idle.call("daemon.ping", rid=0)
    starter = Raw(served.socket)
    start = starter.call("hash.file", {"path": str(path), "algorithm": "md5"}, rid=1)
    job_id = start["result"]["id"]
    progress, finished = follow(starter, job_id)
    assert progress and PROGRESS_FIELDS <= set(progress[-1])
    assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] == 3 * 2**20
    assert finished["state"] == "succeeded"
    assert finished["result"] == {"md5": hashlib.md5(path.read_bytes()).hexdigest()}
    assert idle.call("daemon.ping", rid="x")["id"] == "x"  # not a single notification before it
    late = Raw(served.socket)
    assert late.call("job.watch", {"job_id": job_id}, rid=2)["result"]["state"] == "succeeded"
    assert late.call("daemon.ping", rid=3)["id"] == 3  # a finished job sends nothing more
    for r in (idle, starter, late):
        r.close()


def test_watch_and_cancel_from_raw_clients(served: Started, tmp_path: Path) -> None:
    path = tmp_path / "huge"
    with open(path, "wb") as f:
        f.truncate(64 * 2**30)
    starter = Raw(served.socket)
    job_id = starter.call("hash.file", {"path": str(path), "algorithm": "md5"}, rid=1)["result"]["id"]
    starter.close()  # the job goes on without the client that started it
    watcher = Raw(served.socket)
    assert watcher.call("job.watch", {"job_id": job_id}, rid=2)["result"]["state"] in ("queued", "running")
    assert watcher.msg()["method"] == "job.progress"
    canceller = Raw(served.socket)
    assert canceller.call("job.cancel", {"job_id": job_id}, rid=3)["result"]["state"] == "cancelled"
    _, finished = follow(watcher, job_id)
    assert finished["state"] == "cancelled" and finished["error"]["code"] == 1007
    watcher.close()
    canceller.close()
