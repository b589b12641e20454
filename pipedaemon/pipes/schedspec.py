"""The ``schedule`` and ``mirror`` pipe settings as msgspec Structs, and when a schedule runs next.

``schedule``: ``{"every": "15m", "action": "check", "jitter": "1m"}`` or ``{"at": "02:30"}``
(local time). ``mirror``: ``{"from": "REMOTE:folder/", "to": "REMOTE:folder/"}`` plus the
options of ``client.mirror``. Bad values are InvalidSettings (1003) naming the field.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any, Literal

import msgspec

from pipedaemon_sdk.protocol import errors as E

from ..settings import convert

MIN_PERIOD_S = 1.0  # small enough for tests; a real schedule is minutes or hours
MAX_PERIOD_S = 366 * 86400.0
BACKOFF_CAP_S = 6 * 3600.0  # a failing schedule retries at least this often
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
Action = Literal["check", "pull", "push", "mirror"]
Mode = Literal["default", "new", "mod", "all"]


class ScheduleSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    every: str | float | None = None
    at: str | None = None
    action: Action = "check"
    jitter: str | float | None = None


class MirrorSetting(
    msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, rename={"src": "from", "dst": "to"}
):
    src: str
    dst: str
    mode: Mode = "default"
    include: str | None = None
    exclude: str | None = None
    delete: bool = False


def _bad(msg: str, field: str) -> E.InvalidSettingsError:
    return E.InvalidSettingsError(f"{msg} (field: {field})", {"field": field})


def duration(value: Any, field: str) -> float:
    """Seconds of "90s", "15m", "2h", "1d" or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(value) if isinstance(value, str) else None
        if m is None:
            raise _bad(f"{field} must be a duration like '30s', '15m', '2h' or '1d', not {value!r}", field)
        seconds = float(m[1]) * _UNITS[m[2]]
    return seconds


def parse_schedule(raw: Any, field: str = "schedule") -> ScheduleSpec:
    spec: ScheduleSpec = convert(raw, ScheduleSpec, field)
    if (spec.every is None) == (spec.at is None):
        raise _bad("a schedule needs one of `every` (a period) or `at` (HH:MM local time)", f"{field}.every")
    if spec.every is not None:
        period = duration(spec.every, f"{field}.every")
        if not MIN_PERIOD_S <= period <= MAX_PERIOD_S:
            raise _bad(
                f"every must be between {MIN_PERIOD_S:g} s and {MAX_PERIOD_S / 86400:g} days",
                f"{field}.every",
            )
    if spec.at is not None and not _AT.match(spec.at):
        raise _bad(f"at must be HH:MM (local time), not {spec.at!r}", f"{field}.at")
    if spec.jitter is not None:
        jitter = duration(spec.jitter, f"{field}.jitter")
        if jitter < 0 or jitter > period_of(spec):
            raise _bad("jitter must be between 0 and the schedule's period", f"{field}.jitter")
    return spec


def parse_mirror(raw: Any, field: str = "mirror") -> MirrorSetting:
    spec: MirrorSetting = convert(raw, MirrorSetting, field)
    for side, value in (("from", spec.src), ("to", spec.dst)):
        split_endpoint(value, f"{field}.{side}")
    return spec


_ENDPOINT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127}):(.*)$", re.S)


def split_endpoint(text: str, field: str) -> tuple[str, str]:
    """``REMOTE:folder/`` as (remote, folder relative to its root, '' or ending in '/')."""
    m = _ENDPOINT.match(text) if isinstance(text, str) else None
    if m is None:
        raise _bad(f"{field} must be REMOTE:folder/, not {text!r}", field)
    folder = m[2].strip("/")
    return m[1], (folder + "/" if folder else "")


def period_of(spec: ScheduleSpec) -> float:
    return duration(spec.every, "every") if spec.every is not None else 86400.0


def jitter_of(spec: ScheduleSpec) -> float:
    return random.uniform(0, duration(spec.jitter, "jitter")) if spec.jitter is not None else 0.0


def next_slot(spec: ScheduleSpec, now: float) -> float:
    """When the schedule runs next after a run at ``now`` (a missed slot is not made up twice)."""
    if spec.every is not None:
        return now + period_of(spec) + jitter_of(spec)
    assert spec.at is not None
    hour, minute = (int(x) for x in spec.at.split(":"))
    local = dt.datetime.fromtimestamp(now).astimezone()
    slot = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if slot.timestamp() <= now:
        slot = (slot + dt.timedelta(days=1)).replace(hour=hour, minute=minute)
    return slot.timestamp() + jitter_of(spec)


def first_run(spec: ScheduleSpec, now: float) -> float:
    """A new `every` schedule runs at once (its first listing is what later ones compare with)."""
    return now if spec.every is not None else next_slot(spec, now)


def backoff(spec: ScheduleSpec, failures: int, now: float) -> float:
    """After ``failures`` failed runs in a row: the period doubled per failure, capped."""
    base = min(period_of(spec), 300.0) if spec.at is not None else period_of(spec)
    delay = min(base * 2 ** min(failures, 30), max(base, BACKOFF_CAP_S))
    later = now + delay
    return min(later, next_slot(spec, now)) if spec.at is not None else later
