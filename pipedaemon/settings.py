"""Remote settings as users write them, validated per protocol with msgspec.

A wrong or missing field is an InvalidSettingsError (1003) whose ``data.field``
names it (``options.port``, ``credentials.password``...).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from pipedaemon_sdk.protocol import errors as E

from .rpc import validation_error

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PROTOCOLS = ("s3", "sftp", "ftp", "local", "pipedaemon")
T = TypeVar("T")


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


MiB, GiB = 1 << 20, 1 << 30
# Values that cannot work are refused here, naming the field, rather than failing later at the storage.
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
Streams = Annotated[int, msgspec.Meta(ge=1, le=64)]
PartSize = Annotated[int, msgspec.Meta(ge=5 * MiB, le=5 * GiB)]  # S3's limits for a part
Threshold = Annotated[int, msgspec.Meta(ge=0, le=5 * GiB)]  # S3's limit for a single PUT or copy
# No control characters where a value travels inside an FTP command or an HTTP header: a CR LF
# in a password or a path would smuggle in commands of its own.
_ONE_LINE = r"^[^\x00-\x1f\x7f]*\Z"
OneLine = Annotated[str, msgspec.Meta(pattern=_ONE_LINE)]
_URL = r"^https?://[^\x00-\x20\x7f]+\Z"
Url = Annotated[str, msgspec.Meta(pattern=_URL)]
_SAYS = {_ONE_LINE: "without control characters", _URL: "that is an http:// or https:// URL"}


class RemoteSettings(Strict):
    name: str
    protocol: Literal["s3", "sftp", "ftp", "local", "pipedaemon"]
    location: str | None = None
    options: dict[str, Any] = {}
    credentials: dict[str, Any] | None = None  # None: keep what is stored


class S3Options(Strict):
    remotepath: OneLine | None = None
    endpoint_url: Url | None = None
    region: OneLine | None = None
    profile: OneLine | None = None
    addressing_style: Literal["path", "virtual", "auto"] | None = None
    verify: bool | str | None = None
    part_size: PartSize | None = None
    put_threshold: Threshold | None = None
    copy_threshold: Threshold | None = None
    copy_part_size: PartSize | None = None
    list_page_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    read_timeout: Seconds | None = None
    write_concurrency: Streams | None = None
    connect_timeout: Seconds | None = None


class S3Credentials(Strict):
    aws_access_key_id: OneLine
    aws_secret_access_key: OneLine
    aws_session_token: OneLine | None = None
    aws_session_expiration: OneLine | None = None  # ISO 8601; auth_status reports it


class SFTPOptions(Strict):
    create_root: bool = False  # make a missing remotepath on first write (else: 1001)
    host: OneLine | None = None  # a host name, or a Host alias of the ssh config
    port: Port | None = None  # None: the ssh config's Port, else 22
    username: OneLine | None = None  # None: the ssh config's User, else the local user
    remotepath: OneLine = ""
    known_hosts: str | None = None
    connections: Streams = 4
    connect_timeout: Seconds = 10.0
    transport: Literal["auto", "openssh", "asyncssh"] = "auto"
    ssh_config: OneLine | None = None  # None: ~/.ssh/config (and /etc/ssh/ssh_config for ssh)


class SFTPCredentials(Strict):
    username: OneLine | None = None  # d6tpipe's place for the login (overrides options.username)
    password: str | None = None
    private_key: str | None = None
    passphrase: str | None = None


class FTPOptions(Strict):
    create_root: bool = False  # make a missing remotepath on first write (else: 1001)
    host: OneLine | None = None
    port: Port = 21
    username: OneLine = "anonymous"
    remotepath: OneLine = ""
    tls: bool = False
    tls_verify: bool = True
    tls_cafile: str | None = None
    passive: bool = True
    list_command: Literal["MLSD", "LIST"] | None = None
    list_mdtm: bool = True
    connect_timeout: Seconds = 10.0
    timeout: Seconds = 60.0


class FTPCredentials(Strict):
    username: OneLine | None = None  # d6tpipe's place for the login (overrides options.username)
    password: OneLine = ""


class LocalOptions(Strict):
    remotepath: OneLine
    create_root: bool = False  # make a missing remotepath on first use (else: 1001 naming it)


class NoCredentials(Strict):
    pass


class PipedaemonOptions(Strict):
    """A shared daemon (docs/sharing.md): its socket, and the pipe or the remote read through it."""

    socket: Annotated[str, msgspec.Meta(pattern=r"^/")]
    pipe: OneLine | None = None
    remote: OneLine | None = None
    profile: OneLine = "default"  # the shared daemon's profile holding that pipe or remote
    timeout: Seconds = 60.0


SCHEMAS: dict[str, tuple[type[Strict], type[Strict]]] = {
    "s3": (S3Options, S3Credentials),
    "sftp": (SFTPOptions, SFTPCredentials),
    "ftp": (FTPOptions, FTPCredentials),
    "local": (LocalOptions, NoCredentials),
    "pipedaemon": (PipedaemonOptions, NoCredentials),
}


def convert(value: Any, typ: type[T], prefix: str = "") -> T:
    """``value`` as a ``typ`` (a Struct), or InvalidSettingsError (1003) naming the field
    (under ``prefix``) and what is wrong with it; an unknown field's message lists the known
    ones (and the Struct's ``unknown_hint``, if it has one)."""
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        inner = validation_error(exc, E.INVALID_SETTINGS).data.get("field", "")
        field = ".".join(p for p in (prefix, inner) if p)
        reason = str(exc).split(" - at ")[0]
        for pattern, says in _SAYS.items():  # the rule in words, not the regex
            reason = reason.replace(f"matching regex {pattern!r}", says)
        if reason.startswith("Object contains unknown field") and "." not in inner:
            known = ", ".join(f.encode_name for f in msgspec.structs.fields(typ))
            hint = getattr(typ, "unknown_hint", "")
            reason += f" (known: {known}{'; ' + hint if hint else ''})"
        raise E.InvalidSettingsError(f"invalid setting {field or 'settings'}: {reason}",
                                     {"field": field}) from None


def split_credentials(creds: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"read": {...}, "write": {...}}`` or one set used for both."""
    if creds and set(creds) <= {"read", "write"} and all(isinstance(v, dict) for v in creds.values()):
        read = creds.get("read") or creds.get("write") or {}
        return {"read": read, "write": creds.get("write") or read}
    return {"read": creds, "write": creds}


# d6tpipe's short names for S3 keys (its settings files use them), taken as the long ones.
S3_ALIASES = {"key": "aws_access_key_id", "secret": "aws_secret_access_key"}


def _d6tpipe_credentials(protocol: Any, creds: Any) -> Any:
    """Credentials as d6tpipe writes them, in our field names (each set of a read/write pair)."""
    if protocol != "s3" or not isinstance(creds, dict):
        return creds
    if creds and set(creds) <= {"read", "write"}:
        return {mode: _d6tpipe_credentials(protocol, c) for mode, c in creds.items()}
    out = dict(creds)
    for short, long in S3_ALIASES.items():
        if short in out and long not in out:
            out[long] = out.pop(short)
    return out


def validate(raw: Any) -> tuple[RemoteSettings, dict[str, Any]]:
    """Settings checked for their protocol; also the options with defaults filled in."""
    if not isinstance(raw, dict):
        raise E.InvalidSettingsError("remote settings must be an object", {"field": ""})
    if raw.get("credentials"):
        raw = {**raw, "credentials": _d6tpipe_credentials(raw.get("protocol"), raw["credentials"])}
    if "protocol" in raw and raw["protocol"] not in PROTOCOLS:
        raise E.InvalidSettingsError(
            f"unknown protocol {raw['protocol']!r}: use one of {', '.join(PROTOCOLS)}", {"field": "protocol"})
    s = convert(raw, RemoteSettings, "")
    if not NAME_RE.match(s.name):
        raise E.InvalidSettingsError(
            f"invalid remote name {s.name!r}: letters, digits, '.', '_' and '-' (at most 128)",
            {"field": "name"})
    opt_type, cred_type = SCHEMAS[s.protocol]
    options = msgspec.to_builtins(convert(s.options, opt_type, "options"))
    if s.credentials:
        split = set(s.credentials) <= {"read", "write"}
        # Each set as given, under its own name (split_credentials would report a lone write set as read).
        sets = s.credentials if split else {"": s.credentials}
        for mode, cset in sets.items():
            if cset:
                convert(cset, cred_type, f"credentials.{mode}" if mode else "credentials")
    _check_location(s, options)
    return s, {k: v for k, v in options.items() if v is not None}


def _check_location(s: RemoteSettings, options: dict[str, Any]) -> None:
    if s.protocol == "s3":
        rp = options.get("remotepath")
        if rp is None:
            if not s.location:
                raise E.InvalidSettingsError(
                    "missing bucket: give `location` (the bucket) or options.remotepath s3://bucket/prefix/",
                    {"field": "location"})
            options["remotepath"] = f"s3://{s.location}/"
        elif not rp.startswith("s3://") or not rp[5:].split("/")[0]:
            raise E.InvalidSettingsError(f"options.remotepath must look like s3://bucket/prefix/, not {rp!r}",
                                         {"field": "options.remotepath"})
    elif s.protocol in ("sftp", "ftp"):
        if not (options.get("host") or s.location):
            raise E.InvalidSettingsError(f"missing host: give `location` or options.host for {s.protocol}",
                                         {"field": "location"})
        options["host"] = options.get("host") or s.location
    elif s.protocol == "pipedaemon" and (options.get("pipe") is None) == (options.get("remote") is None):
        raise E.InvalidSettingsError("a pipedaemon remote names the shared daemon's options.pipe or "
                                     "options.remote (one of them)", {"field": "options.pipe"})
    elif s.protocol == "local" and not options["remotepath"].startswith("/"):
        raise E.InvalidSettingsError("options.remotepath of a local remote must be an absolute folder",
                                     {"field": "options.remotepath"})


def root_of(protocol: str, options: dict[str, Any]) -> str:
    """The backend path of a remote's root folder, ending in '/' (or '' for a login folder)."""
    rp = options.get("remotepath") or ""
    if protocol == "s3":
        rp = rp[len("s3://"):]
    rp = rp.rstrip("/")
    return rp + "/" if rp else ("/" if (options.get("remotepath") or "").startswith("/") else "")
