"""Fuzzing each registered method's params, generated from the schemas ``daemon.methods`` gives.

Per example: params that fit the schema (sandbox-bound values for fields that name local
paths, URLs or settings), then one mutation: a field of a wrong type, a required field
missing, an unknown field, an extreme value (huge and negative integers, long strings, NUL,
``..``, deep nesting), or params that are not an object. Invariants: every request is
answered with its id; never -32603; a wrong type, a missing or an unknown field is -32602
naming that field; nothing crashes in the daemon (its log) or in a job it started; a second
client's pings keep being answered. ``daemon.shutdown`` is never sent; everything else acts
on a throwaway profile, remote and pipe inside the sandbox.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipedaemon.server import method_table
from tests.support.hostile import NEVER, RAW, Conn, Counter, Sandbox, decode, examples, sandbox
from tests.support.spine import Raw

ALLOWED = {-32700, -32600, -32601, -32602, *range(1001, 1012)}
HUGE = [10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, -1, 0]
PROFILE, REMOTE, PIPE = "fuzz", "fz", "fp"
COUNTER = Counter("fuzz_params")


def load_methods() -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in method_table().describe()}


METHODS = load_methods()


# -- the sandbox -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with sandbox("pd-fuzzp-") as b:
        for sub in ("remote", "local", "repo"):
            (b.base / sub).mkdir()
        yield b
        jobs = Raw(b.sock).call("job.list", {"limit": 10000})["result"]
        crashed = [j for j in jobs if (j.get("error") or {}).get("code") == -32603]
        assert not crashed, crashed  # a job's failure is a documented error, never a crash
        COUNTER.add("jobs started (all ended without a crash)", 0)
        print(f"fuzz_params: {len(jobs)} jobs started by fuzzed requests")
    COUNTER.report()


def ensure_fixtures(box: Sandbox, raw: Raw) -> None:
    """A remote, a pipe and a few files in the throwaway profile (a fuzzed delete may have removed them)."""
    base = box.base
    (base / "remote" / "sub").mkdir(parents=True, exist_ok=True)
    for rel in ("remote/a.txt", "remote/sub/b.txt", "local/a.txt", "local/c.csv"):
        (base / rel).write_text(rel)
    calls = [("remote.upsert", {"profile": PROFILE, "settings": {
        "name": REMOTE, "protocol": "local", "options": {"remotepath": f"{base}/remote/"}}}),
        ("pipe.config_update", {"profile": PROFILE, "config": {"filerepo": f"{base}/repo"}}),
        ("pipe.upsert", {"profile": PROFILE, "settings": {"name": PIPE, "remote": REMOTE}}),
        ("daemon.limits", {"bwlimit_bps": 0, "max_streams": 16, "remote_streams": 8})]
    for method, params in calls:
        assert "result" in raw.call(method, params, rid="setup"), method


# -- values ------------------------------------------------------------------------------
def json_kind_values() -> st.SearchStrategy[Any]:
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
    def grow(k: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.lists(k, max_size=3) | st.dictionaries(st.text(max_size=8), k, max_size=3)

    return st.recursive(leaf, grow, max_leaves=8)


ANY = json_kind_values()


def relative(s: str) -> str:
    return s.lstrip("/~") or "x"


def hints(box: Sandbox) -> dict[str, st.SearchStrategy[Any]]:
    """Plausible values by field name: they reach past lookups into the handlers, inside the sandbox."""
    b = str(box.base)
    local = st.sampled_from([f"{b}/local/a.txt", f"{b}/local/c.csv", f"{b}/local/", f"{b}/local/new.bin",
                             f"{b}/local/nope", f"{b}/local/../local/a.txt", f"{b}/local/a.txt\x00x"])
    keys = st.sampled_from(["a.txt", "sub/b.txt", "sub/", "", "../x", "/abs", "a\x00b", "a\\..\\..\\x",
                            "n" * 2000])
    return {
        "profile": st.sampled_from([PROFILE, PROFILE, "fuzz/pipes", "", "nope"]),
        "remote": st.sampled_from([REMOTE, REMOTE, "nope", ""]),
        "dst_remote": st.sampled_from([REMOTE, None, "nope"]),
        "name": st.sampled_from([PIPE, REMOTE, "nope", "../x", ""]),
        "path": local | st.text(max_size=20).map(relative),
        "dest": local | st.text(max_size=20).map(relative),
        "paths": st.lists(local, max_size=3),
        "key": keys, "dst_key": keys, "prefix": keys,
        "bucket": st.sampled_from([None, "sub", "../x", "nope"]),
        "files": st.lists(keys, max_size=3) | st.none(),
        "url": st.sampled_from(["http://127.0.0.1:9/x", "ftp://x", "file:///etc/passwd", ""]),
        "job_id": st.sampled_from(["0" * 16, "nope", ""]),
        "settings": settings_values(b),
        "config": config_values(b),
        "subdir": st.sampled_from([None, "s", "../up", "/abs"]),
    }


def mutate_dict(base: dict[str, Any], protect: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with one entry replaced by any value (a protected one never by an absolute path)."""
    def one(key: str) -> st.SearchStrategy[dict[str, Any]]:
        values = ANY.map(lambda v: relative(v) if key in protect and isinstance(v, str) else v)
        return values.map(lambda v: {**base, key: v})

    return st.one_of(st.just(base), *[one(k) for k in base])


def settings_values(b: str) -> st.SearchStrategy[Any]:
    remote = {"name": "fzx", "protocol": "local", "options": {"remotepath": f"{b}/remote/"}}
    pipe = {"name": "fpx", "remote": REMOTE, "options": {"dir": "sub", "include": "*.txt"}}
    return st.one_of(
        mutate_dict(remote, {"options"}).filter(lambda d: d.get("protocol") not in ("s3", "sftp", "ftp")),
        mutate_dict({"remotepath": f"{b}/remote/"}, {"remotepath"}).map(lambda o: {**remote, "options": o}),
        mutate_dict(pipe, set()).filter(lambda d: d.get("protocol") is None),
        mutate_dict({"dir": "sub", "include": "*.txt", "exclude": "b*", "scan_ttl_s": 1}, set()).map(
            lambda o: {**pipe, "options": o}),
        st.dictionaries(st.text(max_size=10), ANY, max_size=4))


def config_values(b: str) -> st.SearchStrategy[Any]:
    return mutate_dict({"filerepo": f"{b}/repo", "scan_ttl_s": 1, "parallel_files": 2, "bwlimit_bps": 0},
                       {"filerepo"}) | st.dictionaries(st.text(max_size=10), ANY, max_size=3)


def deref(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    return schema


def compatible(v: Any, schema: dict[str, Any], defs: dict[str, Any]) -> bool:
    """Whether msgspec accepts ``v`` for a field of this schema."""
    schema = deref(schema, defs)
    if "anyOf" in schema:
        return any(compatible(v, s, defs) for s in schema["anyOf"])
    if "enum" in schema:
        return v in schema["enum"]
    t = schema.get("type")
    checks = {"string": lambda: isinstance(v, str), "boolean": lambda: isinstance(v, bool),
              "integer": lambda: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda: isinstance(v, (int, float)) and not isinstance(v, bool),
              "null": lambda: v is None,
              "object": lambda: isinstance(v, dict) and all(
                  compatible(x, schema.get("additionalProperties", {}), defs) for x in v.values()),
              "array": lambda: isinstance(v, list) and all(
                  compatible(x, schema.get("items", {}), defs) for x in v)}
    return checks[t]() if t in checks else True


def typed(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values msgspec accepts for the field (some of them extreme)."""
    schema = deref(schema, defs)
    if "anyOf" in schema:
        return st.one_of(*[typed(s, defs) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    t = schema.get("type")
    if t == "array":
        return st.lists(typed(schema.get("items", {}), defs), max_size=3)
    if t == "object":
        values = typed(schema.get("additionalProperties", {}), defs)
        return st.dictionaries(st.text(max_size=8), values, max_size=3)
    simple = {"string": st.text(max_size=20).map(relative), "boolean": st.booleans(), "null": st.none(),
              "integer": st.integers() | st.sampled_from(HUGE), "number": st.floats(allow_nan=False,
                                                                                    allow_infinity=False)}
    return simple.get(t, ANY)


def extreme(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    schema = deref(schema, defs)
    if "anyOf" in schema:
        return st.one_of(*[extreme(s, defs) for s in schema["anyOf"]])
    t = schema.get("type")
    if t == "string" and "enum" not in schema:
        # (Lone surrogates make the whole line invalid JSON for the daemon: the wire fuzzer sends those.)
        return st.sampled_from(["", "\x00", "..", "a" * 100_000, "é" * 5000, "\U0010ffff", "\u202e", "\n",
                                "*" * 300])
    if t == "integer":
        return st.sampled_from(HUGE)
    if t == "number":
        return st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0])
    if t == "array":
        return st.lists(typed(schema.get("items", {}), defs), min_size=200, max_size=1000)
    if t == "object":
        deep: Any = 1
        for _ in range(300):
            deep = {"d": deep}
        return st.just(deep)
    return typed(schema, defs)


# -- requests ------------------------------------------------------------------------------
@st.composite
def requests(draw: st.DrawFn, name: str, box: Sandbox) -> tuple[Any, str | None]:
    """(params, the field a -32602 must name or None)."""
    schema = METHODS[name]["params"]
    defs = schema.get("$defs", {})
    body = deref(schema, defs)
    props: dict[str, Any] = body.get("properties", {})
    required = set(body.get("required", []))
    hint = hints(box)
    params: dict[str, Any] = {}
    for field, fs in props.items():
        if field in required or draw(st.booleans()):
            good = hint[field].filter(lambda v, fs=fs: compatible(v, fs, defs)) if field in hint else None
            params[field] = draw(good if good is not None else typed(fs, defs))
    kind = draw(st.sampled_from(["asis", "wrong", "missing", "unknown", "extreme", "not-object"]))
    if kind == "wrong" and props:
        field = draw(st.sampled_from(sorted(props)))
        params[field] = draw(ANY.filter(lambda v: not compatible(v, props[field], defs)))
        return params, field
    if kind == "missing" and required:
        field = draw(st.sampled_from(sorted(required)))
        del params[field]
        return params, field
    if kind == "unknown":
        field = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in props and "`" not in k))
        params[field] = draw(ANY)
        return params, field
    if kind == "extreme" and props:
        field = draw(st.sampled_from(sorted(props)))
        params[field] = draw(extreme(props[field], defs))
    if kind == "not-object":
        return draw(st.sampled_from([[], [params], "x", 3, True])), ""
    return params, None


def line(rid: int, method: str, params: Any) -> bytes:
    text = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    return text.encode("utf-8", "surrogatepass") + b"\n"


def check(answer: dict[str, Any], rid: int, params: Any, named: str | None) -> None:
    assert answer.get("id") == rid, answer
    if "error" not in answer:
        assert named is None, (params, answer)  # a mutation that must be refused was accepted
        return
    err = answer["error"]
    assert err["code"] in ALLOWED, (params, err)
    if named is not None:
        assert err["code"] == -32602, (params, err)
        if named:  # the field itself, or a place inside it ("files[0]")
            field = (err.get("data") or {}).get("field", "")
            assert field == named or field.startswith((f"{named}[", f"{named}.")), (params, err)


def ask(box: Sandbox, raw: Raw, method: str, params: Any) -> dict[str, Any]:
    rid = COUNTER.total + 1
    COUNTER.add(method)
    if method not in RAW:
        raw.send(line(rid, method, params))
        while True:  # job notifications may come first (the jobs it started tell this connection)
            msg = raw.msg()
            if msg.get("id") == rid:
                return msg
    c = Conn(box.sock)  # a stream method takes its connection over: one each
    try:
        c.send(line(rid, method, params))
        c.s.shutdown(socket.SHUT_WR)  # object.write gets no bytes: it must refuse, not wait
        return decode(c.line())
    finally:
        c.close()


FUZZED = sorted(n for n in METHODS if n not in NEVER)


@pytest.mark.parametrize("method", FUZZED)
def test_fuzzed_params(box: Sandbox, method: str) -> None:
    raw = Raw(box.sock, timeout=60)
    ensure_fixtures(box, raw)
    log_start = len(box.log())  # judge this method by its own log lines

    # No shrinking: a failure shows the input as generated (shrinking a hang takes forever).
    @settings(max_examples=examples(30), deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])
    @given(req=requests(method, box))
    def run(req: tuple[Any, str | None]) -> None:
        params, named = req
        rid = COUNTER.total + 1
        try:
            answer = ask(box, raw, method, params)
        except OSError as exc:  # a timeout: no answer came
            raise AssertionError(f"no answer to {method} {str(params)[:500]}") from exc
        check(answer, rid, params, named)

    try:
        run()
    finally:
        raw.close()
    box.pinger.check()
    log = box.log()[log_start:]
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]


def test_every_method_but_shutdown_is_fuzzed() -> None:
    assert set(FUZZED) | NEVER == set(METHODS)
    assert len(FUZZED) >= 40


def test_schemas_name_their_fields(box: Sandbox) -> None:
    """The schemas the fuzzer reads are the ones the daemon serves."""
    served = {m["name"]: m["params"] for m in Raw(box.sock).call("daemon.methods")["result"]}
    assert served == {n: m["params"] for n, m in METHODS.items()}



def test_put_request_to_nowhere_fails_cleanly(box: Sandbox) -> None:
    """Found by the fuzzer: an unreachable URL crashed the job (-32603); now StorageError 1008."""
    raw = Raw(box.sock)
    ensure_fixtures(box, raw)
    params = {"profile": PROFILE, "remote": REMOTE, "key": "u.bin", "url": "http://127.0.0.1:9/x"}
    job_id = raw.call("object.put_request", params)["result"]["id"]
    while True:
        msg = raw.msg()
        if msg.get("method") == "job.finished":
            break
    assert msg["params"]["id"] == job_id and msg["params"]["error"]["code"] == 1008
    bad = raw.call("object.put_request", {**params, "headers": {"x": "1\r\nInjected: yes"}}, rid=2)
    assert bad["error"]["code"] == -32602 and bad["error"]["data"]["field"] == "headers"
    raw.close()


@pytest.mark.parametrize("method", ["daemon.limits", "transfer.upload", "transfer.download"])
def test_a_bandwidth_of_400_digits_is_refused(box: Sandbox, method: str) -> None:
    """Found by the fuzzer: 10**400 bytes/s crashed converting to float (-32603, or the job)."""
    raw = Raw(box.sock)
    ensure_fixtures(box, raw)
    params: dict[str, Any] = {"bwlimit_bps": 10**400}
    if method != "daemon.limits":
        params |= {"profile": PROFILE, "remote": REMOTE, "key": "a.txt", "path": f"{box.base}/local/a.txt",
                   "dest": f"{box.base}/local/dl.txt"}
        params.pop("path" if method == "transfer.download" else "dest")
    err = raw.call(method, params)["error"]
    assert err["code"] == -32602 and err["data"]["field"] == "bwlimit_bps"
    raw.close()
