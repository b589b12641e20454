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
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.pipefiles import split_pattern

from .. import safepath
from ..settings import NAME_RE

PIPE_OPTIONS = ("dir", "include", "exclude", "scan_ttl_s")
TOP_KEYS = ("name", "remote", "parent", "protocol", "location", "credentials", "options", "schema",
            "description", "schedule", "mirror")
MODES = ("default", "new", "mod", "all")
MERGE_MODES = (None, "keep", "overwrite")
HIDDEN_SUFFIX = "/pipes"  # hidden remotes of self-hosted pipes live in "<profile>/pipes"


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


def check_options(options: Any) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise _bad("options must be an object", "options")
    if "dir" in options:
        clean_dir(options["dir"])
    for key in ("include", "exclude"):
        if options.get(key) is not None:
            split_pattern(options[key], f"options.{key}")
    ttl = options.get("scan_ttl_s")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0):
        raise _bad("options.scan_ttl_s must be a number of seconds >= 0", "options.scan_ttl_s")
    return options


def validate(raw: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The pipe's own settings to store (never credentials) and, for a self-hosted
    pipe, the settings of its hidden remote (with credentials)."""
    if not isinstance(raw, dict):
        raise _bad("pipe settings must be an object", "")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise _bad(f"unknown pipe setting {unknown[0]!r} (known: {', '.join(TOP_KEYS)})", unknown[0])
    name = check_name(raw.get("name"))
    if raw.get("schedule") is not None or raw.get("mirror") is not None:
        from .schedspec import parse_mirror, parse_schedule

        if raw.get("schedule") is not None:
            parse_schedule(raw["schedule"])
        if raw.get("mirror") is not None:  # remote to remote: no storage or local folder of its own
            parse_mirror(raw["mirror"])
            extra = sorted(k for k in raw if k not in ("name", "mirror", "schedule", "description")
                           and raw[k] is not None)
            if extra:
                raise _bad(f"a mirror pipe has only name, mirror, schedule and description, not {extra[0]!r}",
                           extra[0])
            return {k: copy.deepcopy(v) for k, v in raw.items() if v is not None}, None
    for key in ("remote", "parent"):
        if raw.get(key) is not None:
            check_name(raw[key], key, key)
    if raw.get("remote") and raw.get("protocol"):
        raise _bad("give either `remote` or a self-hosted `protocol`, not both", "protocol")
    if not (raw.get("remote") or raw.get("parent") or raw.get("protocol")):
        raise _bad("a pipe needs a `remote`, a `parent` or a self-hosted `protocol`", "remote")
    if raw.get("parent") == name:
        raise _bad(f"pipe {name} cannot be its own parent", "parent", chain=[name, name])
    if raw.get("schema") is not None and not isinstance(raw["schema"], dict):
        raise _bad("schema must be an object", "schema")
    if raw.get("description") is not None and not isinstance(raw["description"], str):
        raise _bad("description must be a string", "description")
    # Not `or {}`: an empty list (or 0, "") is a wrong type, not "no options".
    options = check_options(raw["options"] if raw.get("options") is not None else {})
    own = {k: copy.deepcopy(v) for k, v in raw.items() if k != "credentials" and v is not None}
    if options:
        own["options"] = options
    if not raw.get("protocol"):
        extra = sorted(set(options) - set(PIPE_OPTIONS))
        if extra:
            raise _bad(f"unknown pipe option {extra[0]!r} (pipe options: {', '.join(PIPE_OPTIONS)}; "
                       "storage options belong to the remote)", f"options.{extra[0]}")
        if raw.get("credentials") is not None or raw.get("location") is not None:
            raise _bad("credentials and location belong to a self-hosted pipe (one with `protocol`)",
                       "credentials" if raw.get("credentials") is not None else "location")
        return own, None
    remote = {"name": name, "protocol": raw["protocol"], "location": raw.get("location"),
              "options": {k: v for k, v in options.items() if k not in PIPE_OPTIONS},
              "credentials": raw.get("credentials")}
    return own, remote


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


def default_filerepo(profile: str) -> str:
    return str(Path.home() / "pipedaemon-data" / profile)


def config_with_defaults(profile: str, stored: dict[str, Any]) -> dict[str, Any]:
    out = {**CONFIG_DEFAULTS, **stored}
    out["filerepo"] = out["filerepo"] or default_filerepo(profile)
    out["profile"] = profile
    return out


def _number(value: Any, field: str, low: float, high: float, integer: bool) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (isinstance(value, int) or math.isfinite(value))  # (an int of 400 digits has no float)
    if integer:
        ok = ok and (isinstance(value, int) or value.is_integer())
    if not ok or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise _bad(f"{field} must be {kind} between {low:g} and {high:g}", field)
    return int(value) if integer else float(value)


def check_config(update: Any) -> dict[str, Any]:
    """A partial profile config, checked; ``filerepo`` made absolute."""
    if not isinstance(update, dict):
        raise _bad("config must be an object", "")
    out: dict[str, Any] = {}
    for key, value in update.items():
        if key == "filerepo":
            if not isinstance(value, str) or not value.strip():
                raise _bad("filerepo must be a folder path", key)
            if any(ord(c) < 32 for c in value) or len(value.encode()) > 4000:  # (NUL: ValueError in os.*)
                raise _bad("filerepo must be a folder path without control characters, under 4000 bytes", key)
            path = os.path.expanduser(value)
            if not os.path.isabs(path):
                raise _bad(f"filerepo must be an absolute path, not {value!r}", key)
            out[key] = os.path.normpath(path)
        elif key == "scan_ttl_s":
            out[key] = _number(value, key, 0, 365 * 86400, False)
        elif key == "parallel_files":
            out[key] = _number(value, key, 1, 64, True)
        elif key == "bwlimit_bps":
            out[key] = _number(value, key, 0, 1 << 50, True)
        else:
            raise _bad(f"unknown config key {key!r} (known: {', '.join(CONFIG_DEFAULTS)})", key)
    return out
