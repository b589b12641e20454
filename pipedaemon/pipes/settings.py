"""Pipe settings as users write them, parent inheritance, and per-profile config.

A pipe names a ``remote``, or a ``parent`` whose settings it inherits (nested dicts
merged, the child winning), or carries ``protocol``/``location``/``credentials``
itself (d6tpipe's self-hosted form: the daemon keeps those as a hidden remote, so
credentials are sealed like any remote's). Pipe options are ``dir``, ``include``,
``exclude`` and ``scan_ttl_s``; in a self-hosted pipe every other option belongs
to its remote (``remotepath``, ``endpoint_url``...).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, UnsetType

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.pipefiles import split_pattern

from .. import safepath
from ..settings import NAME_RE, Strict, convert

MODES = ("default", "new", "mod", "all")
MERGE_MODES = (None, "keep", "overwrite")
HIDDEN_SUFFIX = "/pipes"  # hidden remotes of self-hosted pipes live in "<profile>/pipes"


class PipeSettings(Strict):
    """A pipe's settings as users write them; a None value is the same as leaving the key out.

    Three kinds, told apart by what they name: a *mirror pipe* (``mirror``: only name,
    mirror, schedule and description), a *self-hosted* pipe (``protocol``, with
    ``location``, ``credentials`` and storage options checked as its hidden remote's) and a
    pipe on a ``remote`` or inheriting from a ``parent``.
    """

    name: str
    remote: str | None = None
    parent: str | None = None
    protocol: Any = None  # (self-hosted: protocol, location and credentials are its remote's)
    location: Any = None
    credentials: Any = None
    options: dict[str, Any] | None = None  # PipeOptions, or SelfHostedOptions with a protocol
    schema: dict[str, Any] | None = None
    description: str | None = None
    schedule: Any = None  # schedspec.ScheduleSpec
    mirror: Any = None  # schedspec.MirrorSetting


class PipeOptions(Strict):
    """The options of a pipe on a remote: its folder, its filters, its listing's TTL."""

    unknown_hint: ClassVar[str] = "storage options belong to the remote"
    dir: str | None = None  # sub-folder of the remote's root (clean_dir)
    include: str | None = None  # glob patterns joined with '|' (split_pattern)
    exclude: str | None = None
    scan_ttl_s: Annotated[float, msgspec.Meta(ge=0)] | None = None


class SelfHostedOptions(PipeOptions, forbid_unknown_fields=False):
    """A self-hosted pipe's options: the pipe's own, and its hidden remote's (checked there)."""


TOP_KEYS = tuple(f.name for f in msgspec.structs.fields(PipeSettings))
PIPE_OPTIONS = tuple(f.name for f in msgspec.structs.fields(PipeOptions))
MIRROR_KEYS = ("name", "mirror", "schedule", "description")


def _bad(msg: str, field: str, **data: Any) -> E.InvalidSettingsError:
    return E.InvalidSettingsError(msg, {"field": field, **data})


def check_name(name: Any, what: str = "pipe", field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad(f"invalid {what} name {name!r}: letters, digits, '.', '_' and '-' (at most 128)", field)
    return name


def hidden_profile(profile: str) -> str:
    return profile + HIDDEN_SUFFIX


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: nested dicts merged key by key, ``over`` winning."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def clean_dir(value: Any) -> str:
    """``options.dir`` as a relative folder without slashes at the ends ('' for the root)."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise _bad("options.dir must be a string", "options.dir")
    try:
        return safepath.clean_key(value.strip("/") or ".", allow_empty=True).rstrip("/")
    except E.UnsafePathError as err:
        raise _bad(f"options.dir {value!r}: {err.data.get('reason', 'unsafe')}", "options.dir") from None


def validate(raw: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The pipe's own settings to store (as given, without None values and never
    credentials) and, for a self-hosted pipe, the settings of its hidden remote (with
    credentials)."""
    if not isinstance(raw, dict):
        raise _bad("pipe settings must be an object", "")
    s = convert(raw, PipeSettings)
    check_name(s.name)
    own = {k: copy.deepcopy(v) for k, v in raw.items() if k != "credentials" and v is not None}
    if s.schedule is not None or s.mirror is not None:
        from .schedspec import parse_mirror, parse_schedule

        if s.schedule is not None:
            parse_schedule(s.schedule)
        if s.mirror is not None:  # remote to remote: no storage or local folder of its own
            parse_mirror(s.mirror)
            extra = sorted(k for k in TOP_KEYS if k not in MIRROR_KEYS and getattr(s, k) is not None)
            if extra:
                raise _bad(f"a mirror pipe has only {', '.join(MIRROR_KEYS[:-1])} and {MIRROR_KEYS[-1]}, "
                           f"not {extra[0]!r}", extra[0])
            return own, None
    _check_storage(s)
    # A self-hosted pipe's other options are its remote's (checked with the remote's settings).
    options = convert(s.options or {}, SelfHostedOptions if s.protocol else PipeOptions, "options")
    clean_dir(options.dir)
    split_pattern(options.include, "options.include")
    split_pattern(options.exclude, "options.exclude")
    if not s.protocol:
        if s.credentials is not None or s.location is not None:
            raise _bad("credentials and location belong to a self-hosted pipe (one with `protocol`)",
                       "credentials" if s.credentials is not None else "location")
        return own, None
    remote = {"name": s.name, "protocol": s.protocol, "location": s.location,
              "options": {k: v for k, v in (s.options or {}).items() if k not in PIPE_OPTIONS},
              "credentials": s.credentials}
    return own, remote


def _check_storage(s: PipeSettings) -> None:
    """Where a (not mirror) pipe's files are: one of a remote, a parent or its own protocol."""
    for key in ("remote", "parent"):
        if getattr(s, key) is not None:
            check_name(getattr(s, key), key, key)
    if s.remote and s.protocol:
        raise _bad("give either `remote` or a self-hosted `protocol`, not both", "protocol")
    if not (s.remote or s.parent or s.protocol):
        raise _bad("a pipe needs a `remote`, a `parent` or a self-hosted `protocol`", "remote")
    if s.parent == s.name:
        raise _bad(f"pipe {s.name} cannot be its own parent", "parent", chain=[s.name, s.name])


# -- inheritance -----------------------------------------------------------------------
Lookup = Callable[[str], "dict[str, Any] | None"]


def chain_of(name: str, lookup: Lookup) -> list[dict[str, Any]]:
    """Own settings of the pipe and its ancestors, the pipe first.

    An unknown pipe or parent is NotFound (1001); a cycle is InvalidSettings (1003).
    """
    out: list[dict[str, Any]] = []
    seen: list[str] = []
    cur: str | None = name
    while cur is not None:
        if cur in seen:
            raise _bad(f"parent cycle: {' -> '.join([*seen, cur])}", "parent", chain=[*seen, cur])
        own = lookup(cur)
        if own is None:
            what = "pipe" if not seen else f"parent pipe (of {seen[-1]})"
            raise E.NotFoundError(f"no such {what}: {cur}", {"pipe": cur, "chain": seen})
        seen.append(cur)
        out.append(own)
        cur = own.get("parent")
    return out


def effective(chain: list[dict[str, Any]]) -> tuple[dict[str, Any], str, str]:
    """Merged settings of a chain (child first) and where its storage comes from:
    ``("remote", name)`` or ``("self", pipe name holding protocol/credentials)``."""
    merged: dict[str, Any] = {}
    for own in reversed(chain):
        merged = deep_merge(merged, own)
    merged["name"] = chain[0]["name"]
    merged.pop("parent", None)
    if chain[0].get("parent"):
        merged["parent"] = chain[0]["parent"]
    for own in chain:  # the nearest pipe naming storage wins
        if own.get("remote"):
            merged.pop("protocol", None)
            merged.pop("location", None)
            return merged, "remote", own["remote"]
        if own.get("protocol"):
            merged.pop("remote", None)
            return merged, "self", own["name"]
    raise _bad(f"pipe {chain[0]['name']} has no remote: none of its parents names one", "remote")


# -- profile config --------------------------------------------------------------------
CONFIG_DEFAULTS: dict[str, Any] = {"filerepo": None, "scan_ttl_s": 300.0, "parallel_files": 8,
                                   "bwlimit_bps": 0}


class ConfigUpdate(Strict):
    """A partial profile config: the keys given are checked, the others keep their value."""

    filerepo: str | UnsetType = UNSET  # an absolute folder path (_filerepo)
    scan_ttl_s: Annotated[float, msgspec.Meta(ge=0, le=365 * 86400)] | UnsetType = UNSET
    parallel_files: Annotated[int, msgspec.Meta(ge=1, le=64)] | UnsetType = UNSET
    bwlimit_bps: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)] | UnsetType = UNSET


_WHOLE = ("parallel_files", "bwlimit_bps")  # counts, given as 8 or 8.0 (1e6 bytes/s is a count too)


def default_filerepo(profile: str) -> str:
    return str(Path.home() / "pipedaemon-data" / profile)


def config_with_defaults(profile: str, stored: dict[str, Any]) -> dict[str, Any]:
    out = {**CONFIG_DEFAULTS, **stored}
    out["filerepo"] = out["filerepo"] or default_filerepo(profile)
    out["profile"] = profile
    return out


def check_config(update: Any) -> dict[str, Any]:
    """A partial profile config, checked; ``filerepo`` made absolute."""
    if not isinstance(update, dict):
        raise _bad("config must be an object", "")
    update = {k: int(v) if k in _WHOLE and isinstance(v, float) and v.is_integer() else v
              for k, v in update.items()}
    out = {k: v for k, v in msgspec.structs.asdict(convert(update, ConfigUpdate)).items() if v is not UNSET}
    if "filerepo" in out:
        out["filerepo"] = _filerepo(out["filerepo"])
    return out


def _filerepo(value: str) -> str:
    if not value.strip():
        raise _bad("filerepo must be a folder path", "filerepo")
    if any(ord(c) < 32 for c in value) or len(value.encode()) > 4000:  # (NUL: ValueError in os.*)
        raise _bad("filerepo must be a folder path without control characters, under 4000 bytes", "filerepo")
    path = os.path.expanduser(value)
    if not os.path.isabs(path):
        raise _bad(f"filerepo must be an absolute path, not {value!r}", "filerepo")
    return os.path.normpath(path)
