"""JSON-RPC 2.0 dispatch: method tables, envelope-first decoding, error mapping.

Each RPC module keeps its methods in a table of its own, filled beside the code they
expose: ``METHODS = Methods()`` and ``@METHODS.rpc("ns.verb", Params)``. The server joins
the tables of the modules it serves (``server.method_table``); nothing is global.

A line is decoded into the envelope first (params left raw), then ``params`` with
the method's own Struct, so a request with bad params still gets an answer with
its id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.wire import (
    ErrorObject,
    Message,
    Request,
    encode_line,
    line_buffer,
    request_decoder,
)

if TYPE_CHECKING:
    from .server import Connection, Daemon

log = logging.getLogger("pipedaemon.rpc")


class _KwOnly(type(msgspec.Struct)):  # type: ignore[misc]
    """Makes every subclass keyword-only, so required fields may follow inherited defaults."""

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> Any:
        kw.setdefault("kw_only", True)
        return super().__new__(mcls, name, bases, ns, **kw)


class Params(msgspec.Struct, metaclass=_KwOnly, forbid_unknown_fields=True):
    """Base of every method's params: unknown fields are refused with -32602."""


class NoParams(Params):
    pass


class ProfileParams(Params):
    profile: str = "default"


@dataclass
class Context:
    daemon: Daemon
    conn: Connection | None
    # The connecting user's name, from the peer credentials (never from params); a shared
    # daemon decides with it what the request may do (access.py).
    user: str | None = None


Handler = Callable[[Context, Any], Awaitable[Any]]


@dataclass
class RawReply:
    """A stream method's answer: the response line, then ``body``'s bytes, then close."""

    header: Any
    body: AsyncIterator[bytes]


@dataclass
class Method:
    name: str
    params: type[Params]
    handler: Handler
    doc: str
    raw: bool  # the method takes over the connection for a byte stream
    decoder: msgspec.json.Decoder[Any]


class Methods:
    """A table of RPC methods by name: one module's (filled by ``@table.rpc``), or the
    union of several (``Methods(a, b, ...)``: a name in two of them is a bug, refused)."""

    def __init__(self, *tables: Methods) -> None:
        self.by_name: dict[str, Method] = {}
        self._described: list[dict[str, Any]] | None = None
        for table in tables:
            for method in table.by_name.values():
                self.add(method)

    def add(self, method: Method) -> None:
        if method.name in self.by_name:
            raise RuntimeError(f"RPC method {method.name} registered twice")
        self.by_name[method.name] = method
        self._described = None

    def rpc(self, name: str, params: type[Params] = NoParams, *,
            raw: bool = False) -> Callable[[Handler], Handler]:
        """Decorator: ``fn`` answers ``name``, its params decoded with ``params``."""
        def register(fn: Handler) -> Handler:
            doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
            self.add(Method(name, params, fn, doc, raw, msgspec.json.Decoder(params)))
            return fn

        return register

    def get(self, name: str) -> Method | None:
        return self.by_name.get(name)

    def describe(self) -> list[dict[str, Any]]:
        """Every method with its params' JSON schema, by name (built once)."""
        if self._described is None:
            self._described = [
                {"name": m.name, "doc": m.doc, "params": msgspec.json.schema(m.params), "stream": m.raw}
                for m in sorted(self.by_name.values(), key=lambda m: m.name)
            ]
        return self._described


PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # settings.NAME_RE, without its imports
_AT = re.compile(r" - at `\$(.*)`$")


def validation_error(exc: msgspec.ValidationError, code: int = E.INVALID_PARAMS) -> E.DaemonError:
    """A DaemonError naming the offending field, from msgspec's message."""
    text = str(exc)
    m = _AT.search(text)
    field = m.group(1).lstrip(".") if m else ""
    named = re.search(r"(?:unknown|missing required) field `([^`]*)`", text)
    if named:  # the field is named in the text, its parent in the path
        field = ".".join(p for p in (field, named.group(1)) if p)
    msg = _AT.sub("", text)
    data = {"field": field} if field else {}
    return E.error_from_code(code, f"{msg}" + (f" (field: {field})" if field else ""), data)


def error_message(rid: Any, err: E.DaemonError) -> Message:
    return Message(id=rid, error=ErrorObject(err.code, err.message, err.data or None))


def _not_json() -> Message:
    return error_message(None, E.ParseError("parse error: the line is not valid JSON"))


class _Loose(msgspec.Struct):
    """The envelope's members with any types, the others skipped: to say what is wrong with a
    line that is not a Request, and to answer with its id where it has one."""

    jsonrpc: Any = msgspec.UNSET
    id: Any = msgspec.UNSET
    method: Any = msgspec.UNSET
    params: msgspec.Raw = msgspec.Raw(b"{}")


_loose_decoder = msgspec.json.Decoder(_Loose)


def _utf8_outside_params(line: bytes, params: msgspec.Raw) -> bool:
    """The envelope skips members it does not know without checking them: bad UTF-8 there
    makes the line not JSON. Inside ``params`` it is left to the params decoder, whose
    -32602 carries the request's id."""
    if line.isascii():
        return True
    try:
        line.replace(bytes(params), b"", 1).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def parse(line: bytes) -> tuple[Request | None, Message | None]:
    """The request on a line, or the error answer for a line that is not one.

    Members other than jsonrpc, id, method and params are ignored, and not checked
    beyond UTF-8 (a number too large for us there changes nothing)."""
    # msgspec raises RecursionError for deep nesting and UnicodeDecodeError for bad UTF-8 inside
    # a string: bad input like any other, never an escape that drops the connection.
    try:
        req = request_decoder.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None, _refusal(line)
    except (RecursionError, UnicodeDecodeError):
        return None, _not_json()
    if _utf8_outside_params(line, req.params):
        return req, None
    return None, _not_json()


def _refusal(line: bytes) -> Message:
    try:
        env = _loose_decoder.decode(line)
    except msgspec.ValidationError:  # not an object: JSON at all?
        try:
            whole = msgspec.json.decode(line)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            return _not_json()
        what = "an array" if isinstance(whole, list) else "a scalar"
        return error_message(None, E.InvalidRequestError(f"invalid request: expected an object, got {what}"))
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return _not_json()
    if not _utf8_outside_params(line, env.params):
        return _not_json()
    rid = env.id if isinstance(env.id, (int, str)) and not isinstance(env.id, bool) else None
    if not isinstance(env.method, str):
        return error_message(rid, E.InvalidRequestError(
            "invalid request: `method` must be a string", {"field": "method"}))
    fields = {k: v for k in ("jsonrpc", "id", "method") if (v := getattr(env, k)) is not msgspec.UNSET}
    try:
        msgspec.convert(fields, Request)
    except msgspec.ValidationError as exc:
        return error_message(rid, validation_error(exc, E.INVALID_REQUEST))
    return error_message(rid, E.InvalidRequestError("invalid request"))


def lookup(methods: Methods, req: Request) -> tuple[Method | None, Any, E.DaemonError | None]:
    method = methods.get(req.method)
    if method is None:
        return None, None, E.MethodNotFoundError(f"unknown method: {req.method}", {"method": req.method})
    try:
        params = method.decoder.decode(req.params)
    except msgspec.ValidationError as exc:
        return method, None, validation_error(exc)
    except msgspec.DecodeError as exc:
        return method, None, E.InvalidParamsError(f"params: {exc}")
    except UnicodeDecodeError:  # the envelope skips params unchecked: bad UTF-8 shows up only here
        return method, None, E.InvalidParamsError("params: a string is not valid UTF-8")
    except RecursionError:
        return method, None, E.InvalidParamsError("params: nested too deeply")
    profile = getattr(params, "profile", None)
    if isinstance(profile, str) and not PROFILE_RE.match(profile):
        # Profiles follow the remote-name rule: never "<profile>/pipes" (the hidden remotes of
        # self-hosted pipes), never empty or with spaces.
        return method, None, E.InvalidSettingsError(
            f"invalid profile name {profile!r}: letters, digits, '.', '_' and '-' (at most 128)",
            {"field": "profile"})
    return method, params, None


async def invoke(method: Method, params: Any, ctx: Context) -> tuple[Any, E.DaemonError | None]:
    """Run a handler: its result, or the DaemonError to answer with. A shared daemon's guard
    (access.py) checks the acting user's role first, for every method in one place."""
    # Requests at debug, by name only: params may hold credentials.
    log.debug("request %s", method.name)
    guard = ctx.daemon.guard
    try:
        if guard is not None:
            return await guard.run(method, params, ctx), None
        return await method.handler(ctx, params), None
    except E.DaemonError as err:
        log.info("%s failed: %s [code %d]", method.name, err.message, err.code)
        return None, err
    except msgspec.ValidationError as exc:
        return None, validation_error(exc, E.INVALID_SETTINGS)
    except Exception:
        log.exception("internal error in %s", method.name)
        return None, E.InternalError(f"internal error in {method.name}; see the daemon log")


def answer(req: Request, result: Any, err: E.DaemonError | None) -> bytes | bytearray | None:
    """The response line, or None for a notification (a request without id)."""
    if req.id is msgspec.UNSET:
        return None
    if err is not None:
        return encode_line(error_message(req.id, err))
    return line_buffer(Message(id=req.id, result=result))

