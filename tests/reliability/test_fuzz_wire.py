"""Fuzzing whole lines on the wire (hypothesis): random bytes, invalid UTF-8, deep nesting,
huge numbers, wrong types, unknown fields; then 20 MiB lines, half lines left hanging and
thousands of idle connections.

Invariants, for every input: the daemon never dies (same pid, nothing crashed in its log),
a well-formed request (a JSON object whose ``method`` is a string and whose ``id`` is a
valid JSON-RPC id) gets exactly one answer carrying that id, anything else gets at most
one error (never -32603), the connection stays usable, and a second client's pings keep
being answered throughout (``Pinger``). The spine tests hold the single documented cases;
this suite throws volume and combinations at the same parser.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.hostile import (
    Conn,
    Counter,
    Sandbox,
    decode,
    examples,
    exchange,
    raise_nofile,
    rss_kib,
    sandbox,
)
from tests.support.spine import Raw

# Methods whole lines may name: they only read (the params fuzzer covers the ones that act).
SAFE = ["daemon.ping", "daemon.status", "daemon.methods", "job.list", "job.get", "job.watch", "job.cancel",
        "remote.list", "remote.get", "pipe.list", "pipe.get", "pipe.profiles", "pipe.config_get",
        "bucket.list", "object.list", "object.stat", "no.such", ""]
ALLOWED = {-32700, -32600, -32601, -32602, *range(1001, 1012)}
HUGE = [10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 2**53 + 1]
BIG_TOKENS = {"\x00BIG0\x00": b"1e400", "\x00BIG1\x00": b"-1e400", "\x00BIG2\x00": b"1" + b"0" * 400}
DEEP = 10_000

COUNTER = Counter("fuzz_wire")


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with sandbox("pd-fuzzw-") as b:
        yield b
    COUNTER.report()


@pytest.fixture
def raw(box: Sandbox) -> Iterator[Raw]:
    r = Raw(box.sock)
    yield r
    r.close()
    box.pinger.check()


# -- strategies ------------------------------------------------------------------------------
text = st.text(st.characters(blacklist_categories=()), max_size=40)  # surrogates too
leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE),
                 st.floats(allow_nan=True, allow_infinity=True), text, st.sampled_from(list(BIG_TOKENS)))
json_values = st.recursive(
    leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4), max_leaves=20)
ids = st.one_of(st.integers(), st.sampled_from(HUGE), st.text(max_size=20), st.none(), st.booleans(),
                st.floats(), st.lists(st.integers(), max_size=2), st.sampled_from(list(BIG_TOKENS)))
methods = st.one_of(st.sampled_from(SAFE), st.sampled_from(SAFE).map(lambda m: m.upper()), text, leaf)
envelopes = st.fixed_dictionaries(
    {}, optional={"jsonrpc": st.sampled_from(["2.0", "1.0", 2, None]), "id": ids, "method": methods,
                  "params": json_values | st.dictionaries(text, json_values, max_size=4)},
).flatmap(lambda env: st.dictionaries(text, json_values, max_size=2).map(lambda extra: {**extra, **env}))


def render(obj: Any, ascii_only: bool) -> bytes:
    """JSON text of ``obj`` (NaN and Infinity as Python writes them: not JSON), big tokens spliced in."""
    out = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")
    for token, raw in BIG_TOKENS.items():
        out = out.replace(json.dumps(token).encode(), raw)
    return out


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "envelope", "mutated", "bad-utf8"]))
    if kind == "bytes":
        data = draw(st.binary(max_size=4096))
    elif kind == "json":
        data = render(draw(json_values), draw(st.booleans()))
    elif kind == "envelope":
        data = render(draw(envelopes), draw(st.booleans()))
    elif kind == "mutated":  # a good request with a few bytes changed, cut or inserted
        data = bytearray(render({"jsonrpc": "2.0", "id": draw(st.integers(0, 99)), "method":
                                 draw(st.sampled_from(SAFE)), "params": draw(json_values)}, True))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            op = draw(st.sampled_from(["set", "cut", "insert"]))
            byte = draw(st.integers(0, 255))
            if op == "set" and at < len(data):
                data[at] = byte
            elif op == "cut":
                del data[at:]
            else:
                data.insert(at, byte)
        data = bytes(data)
    else:  # bytes that are not UTF-8 inside a string of a good request
        bad = draw(st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xc3\x28",
                                    b"\xf8\x88\x80\x80\x80"]))
        around = draw(st.binary(max_size=12))
        junk = around[:6] + bad + around[6:]
        where = draw(st.sampled_from(["id", "method", "param"]))
        data = {"id": b'{"jsonrpc":"2.0","id":"' + junk + b'","method":"daemon.ping"}',
                "method": b'{"jsonrpc":"2.0","id":1,"method":"daemon.' + junk + b'"}',
                "param": b'{"jsonrpc":"2.0","id":1,"method":"job.get","params":{"job_id":"' + junk + b'"}}',
                }[where]
    return data.replace(b"\n", b"")


# -- the oracle ------------------------------------------------------------------------------
class Envelope(msgspec.Struct):
    """The members the protocol reads; any other member is ignored, as docs/protocol.md says
    (not checked either: a 400-digit number or a lone surrogate there changes nothing)."""

    method: Any = msgspec.UNSET
    id: Any = msgspec.UNSET
    params: msgspec.Raw = msgspec.Raw(b"{}")


ENVELOPE = msgspec.json.Decoder(Envelope)


def expected_id(line: bytes) -> tuple[bool, Any]:
    """(well-formed request with an id, that id) by the protocol's rules: an object whose
    ``method`` is a string and whose ``id`` is a valid JSON-RPC id, in UTF-8 throughout."""
    try:
        line.decode("utf-8")
        env = ENVELOPE.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        return False, None
    if not isinstance(env.method, str) or env.id is msgspec.UNSET:
        return False, None
    rid = env.id
    ok = rid is None or isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))
    return ok, rid


def expect_of(batch: list[bytes]) -> list[Any]:
    """The ids the daemon owes answers to."""
    return [rid for ok, rid in map(expected_id, batch) if ok]


def check_answers(line: bytes, answers: list[dict[str, Any]]) -> None:
    for a in answers:
        assert ("result" in a) != ("error" in a), a
        if "error" in a:
            assert a["error"]["code"] in ALLOWED, (line[:300], a)
    well_formed, rid = expected_id(line)
    if well_formed:
        assert len(answers) == 1, (line[:300], answers)
        assert answers[0]["id"] == rid, (line[:300], answers)
    elif not line.strip():
        assert answers == []
    else:  # malformed, or a notification: at most one answer, an error, never about another id
        assert len(answers) <= 1, (line[:300], answers)
        assert all("error" in a for a in answers) or not answers


def send_line(raw: Raw, line: bytes) -> None:
    try:
        method = msgspec.json.decode(line).get("method")
    except Exception:  # noqa: BLE001 - not an object with a method: nothing it could start
        method = None
    assume(method not in ("daemon.shutdown", "object.read", "object.write"))
    COUNTER.add("lines")
    check_answers(line, exchange(raw, line + b"\n", f"s{COUNTER.total}", expect_of([line])))


# -- property tests --------------------------------------------------------------------------
@settings(max_examples=examples(400), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(line=lines())
def test_fuzzed_lines(box: Sandbox, raw: Raw, line: bytes) -> None:
    send_line(raw, line)


@settings(max_examples=examples(100), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batch=st.lists(lines(), min_size=2, max_size=20))
def test_fuzzed_lines_back_to_back(box: Sandbox, raw: Raw, batch: list[bytes]) -> None:
    """Many lines in one write: answers to the well-formed ones come back, each with its id."""
    for line in batch:
        try:
            method = msgspec.json.decode(line).get("method")
        except Exception:  # noqa: BLE001
            method = None
        assume(method not in ("daemon.shutdown", "object.read", "object.write"))
    COUNTER.add("batched lines", len(batch))
    want = expect_of(batch)
    answers = exchange(raw, b"".join(line + b"\n" for line in batch), f"b{COUNTER.total}", want)
    got = [a.get("id") for a in answers]
    for rid in want:  # answers may come in another order (requests run concurrently)
        assert rid in got, (want, got)
    assert all(a["error"]["code"] in ALLOWED for a in answers if "error" in a)


# -- the extremes, each named ----------------------------------------------------------------
def nest(n: int, inner: bytes = b"1") -> bytes:
    return b"[" * n + inner + b"]" * n


def env(rid: bytes, method: bytes, params: bytes | None = None) -> bytes:
    out = b'{"jsonrpc":"2.0","id":' + rid + b',"method":' + method
    return out + (b',"params":' + params if params is not None else b"") + b"}"


EXTREMES = {
    "deep-array-line": nest(DEEP),
    "deep-object-line": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep-params": env(b"1", b'"daemon.ping"', b'{"x":' + nest(DEEP) + b"}"),
    "deep-id": env(nest(DEEP), b'"daemon.ping"'),
    "deep-method": env(b"2", nest(DEEP, b'"daemon.ping"')),
    "deep-unknown-field": b'{"jsonrpc":"2.0","id":3,"method":"daemon.ping","zz":' + nest(DEEP) + b"}",
    "id-1e400": env(b"1e400", b'"daemon.ping"'),
    "id-10**400": env(str(10**400).encode(), b'"daemon.ping"'),
    "id--10**400": env(str(-(10**400)).encode(), b'"daemon.ping"'),
    "id-5000-digits": env(b"9" * 5000, b'"daemon.ping"'),
    "limit-10**400": env(b"4", b'"job.list"', b'{"limit":' + str(10**400).encode() + b"}"),
    "limit--10**400": env(b"5", b'"job.list"', b'{"limit":-' + str(10**400).encode() + b"}"),
    "limit-1e400": env(b"6", b'"job.list"', b'{"limit":1e400}'),
    "limit-nan": env(b"7", b'"job.list"', b'{"limit":NaN}'),
    "job-id-number": env(b"8", b'"job.get"', b'{"job_id":' + str(10**400).encode() + b"}"),
    "job-id-1mib": env(b"9", b'"job.get"', b'{"job_id":"' + b"j" * 2**20 + b'"}'),
    "method-1mib": env(b"10", b'"' + b"m" * 2**20 + b'"'),
    "id-1mib": env(b'"' + b"i" * 2**20 + b'"', b'"daemon.ping"'),
    "many-unknown-fields": env(b"11", b'"daemon.status"',
                               json.dumps({f"f{i}": i for i in range(50_000)}).encode()),
    "nul-in-method": env(b"12", b'"daemon.ping\\u0000"'),
    "lone-surrogate": env(b'"\\ud800"', b'"daemon.ping"'),
    "bom": b"\xef\xbb\xbf" + env(b"13", b'"daemon.ping"'),
    "utf16": env(b"14", b'"daemon.ping"').decode().encode("utf-16"),
    "overlong-utf8": env(b'"\xc0\xaf"', b'"daemon.ping"'),
    "cr-only": b"\r\r\r",
    "tabs": b"\t \t",
}


@pytest.mark.parametrize("name", list(EXTREMES))
def test_extreme_lines(box: Sandbox, raw: Raw, name: str) -> None:
    line = EXTREMES[name].replace(b"\n", b"")
    COUNTER.add("extremes")
    answers = exchange(raw, line + b"\n", f"x-{name}", expect_of([line]))
    check_answers(line, answers)
    well_formed, rid = expected_id(line)
    if well_formed and name.startswith(("id-", "limit-10", "limit--")) and "1e400" not in name:
        assert answers[0]["id"] == rid  # the id survives, however large


# -- volume: big lines, hanging halves, idle crowds --------------------------------------------
def test_twenty_mib_lines_at_once(box: Sandbox) -> None:
    """Four clients each send 20 MiB without a newline: each is refused and closed; memory returns."""
    before = rss_kib(box.st.pid)
    results: list[bytes] = []

    def flood() -> None:
        r = Raw(box.sock, timeout=120)
        sender = threading.Thread(target=_push, args=(r.s, b"x" * (20 * 2**20)), daemon=True)
        sender.start()
        results.append(r.line())
        sender.join(120)
        r.close()

    workers = [threading.Thread(target=flood) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    COUNTER.add("20MiB lines", 4)
    assert len(results) == 4
    for line in results:
        assert decode(line)["error"]["code"] == -32600
    box.pinger.check()
    # Each connection holds at most one 16 MiB line while it reads; nothing stays with the daemon.
    assert rss_kib(box.st.pid) < before + 4 * 20 * 1024 + 64 * 1024


def _push(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except OSError:
        pass  # the daemon closed once it had seen 16 MiB: expected


def test_half_lines_then_silence(box: Sandbox) -> None:
    """200 clients each send half a request and go quiet; others are served; the halves finish later."""
    hanging = [Conn(box.sock) for _ in range(200)]
    for i, r in enumerate(hanging):
        r.send(b'{"jsonrpc":"2.0","id":%d,"method":"daemon.st' % i)
    COUNTER.add("half lines", len(hanging))
    box.pinger.check()
    fresh = Raw(box.sock)
    assert fresh.call("daemon.status", rid="fresh")["result"]["pid"] == box.st.pid
    fresh.close()
    for r in hanging:
        r.send(b'atus"}\n')
    for i, r in enumerate(hanging):
        msg = r.msg()
        assert msg["id"] == i and msg["result"]["pid"] == box.st.pid
        r.send(b'{"jsonrpc":"2.0","id":"cut"')  # and half of another, then gone
        r.close()
    box.pinger.check()


def test_thousands_of_idle_connections(box: Sandbox) -> None:
    """2,000 connections that say nothing: the daemon keeps serving, and each of them still can."""
    n = 2000
    assert raise_nofile(n + 512) >= n + 100
    idle = []
    try:
        for _ in range(n):
            idle.append(Conn(box.sock).s)
        COUNTER.add("idle connections", n)
        box.pinger.check()
        fresh = Raw(box.sock)
        assert fresh.call("daemon.status", rid="amid-idle")["result"]["pid"] == box.st.pid
        fresh.close()
        for i, s in enumerate(idle):  # every idle client is still served when it speaks up
            s.sendall(b'{"jsonrpc":"2.0","id":%d,"method":"daemon.ping"}\n' % i)
        for i, s in enumerate(idle):
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                assert chunk, f"idle connection {i} was closed"
                buf += chunk
            assert decode(buf)["id"] == i
    finally:
        for s in idle:
            s.close()
    box.pinger.check()


@pytest.mark.parametrize("params", [
    b'{"job_id":"\xff"}', b'{"job_id":"a\xed\xa0\x80"}', b'{"job_id":"ok\xc0"}'])
def test_bad_utf8_in_params_is_answered_with_the_id(box: Sandbox, raw: Raw, params: bytes) -> None:
    """Found by the fuzzer: the envelope skipped params unchecked, and bad UTF-8 inside them
    escaped the params decoder and dropped the connection (rpc.lookup now answers -32602)."""
    answers = exchange(raw, env(b"77", b'"job.get"', params) + b"\n", "utf8", [77])
    assert [a["id"] for a in answers] == [77]
    assert answers[0]["error"]["code"] == -32602 and "UTF-8" in answers[0]["error"]["message"]


@pytest.mark.parametrize("line", [
    b'{"\x80sonrpc": "2.0", "id": 0, "method": "daemon.ping", "params": {}}',
    b'{"jsonrpc":"2.0","id":5,"method":"daemon.ping","extra":"\xff"}',
    b'{"jsonrpc":"2.0","id":5,"method":"daemon.ping","params":{},"x\xed\xa0\x80":1}'])
def test_bad_utf8_outside_params_is_not_json(box: Sandbox, raw: Raw, line: bytes) -> None:
    """Found by the fuzzer: the envelope skipped members it does not know without checking
    them, so such a line was answered as a good request. It is not JSON: -32700."""
    answers = exchange(raw, line + b"\n", "outside")
    assert [(a["id"], a["error"]["code"]) for a in answers] == [(None, -32700)], answers


def test_unicode_outside_params_is_fine(box: Sandbox, raw: Raw) -> None:
    line = '{"jsonrpc":"2.0","id":"é-1","method":"daemon.ping","note":"ünïcode"}'.encode()
    answers = exchange(raw, line + b"\n", "unicode", ["é-1"])
    assert [a["id"] for a in answers] == ["é-1"] and answers[0]["result"]["pong"] is True
