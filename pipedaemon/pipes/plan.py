"""Deciding what a pull or push moves: modes, forced files, nrecent and conflicts.

Pure functions over three views of the pipe: the source side's files, the
destination side's, and the state each file had at its last sync. A file whose
destination copy changed since that sync is never overwritten unless the caller
says merge_mode="overwrite" (safety rule 2); when the source changed too, it is a
conflict. Without a recorded sync, two copies that are not known to be equal are
a conflict as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from .syncstate import FileState, local_changed, remote_changed

Direction = Literal["pull", "push"]


class Side(Protocol):
    """One side's copy of a file: the listing's own objects (a local folder's ``LocalFile``, a
    remote's ``RemoteFile``) serve as they are, with no copy of each per plan."""

    @property
    def size(self) -> int: ...
    @property
    def mtime(self) -> float | None: ...  # seconds
    @property
    def mtime_ns(self) -> int | None: ...  # local copies: exact
    @property
    def etag(self) -> str | None: ...


class PlannedRow(msgspec.Struct):
    """``Move.row()`` as the wire carries it, without a dict per file (a million-file preview)."""

    filename: str
    size: int
    modified_at: float | None
    action: str


@dataclass(slots=True)
class Move:
    name: str
    action: str  # new | modified | overwrite | forced
    src: Side
    dst: Side | None

    def row(self) -> dict[str, Any]:
        return {"filename": self.name, "size": self.src.size, "modified_at": self.src.mtime,
                "action": self.action}

    def wire(self) -> PlannedRow:
        return PlannedRow(self.name, self.src.size, self.src.mtime, self.action)


@dataclass(slots=True)
class Conflict:
    name: str
    local: Side
    remote: Side

    def row(self, action: str, direction: Direction) -> dict[str, Any]:
        src = self.remote if direction == "pull" else self.local
        return {"filename": self.name, "size": src.size, "modified_at": src.mtime, "action": action,
                "local_size": self.local.size, "local_modified_at": self.local.mtime,
                "remote_size": self.remote.size, "remote_modified_at": self.remote.mtime}


@dataclass
class Plan:
    direction: Direction
    moves: list[Move] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)  # reported, nothing moved
    kept: list[Conflict] = field(default_factory=list)  # merge_mode="keep"
    adopt: list[str] = field(default_factory=list)  # equal on both sides: record, move nothing
    missing: list[str] = field(default_factory=list)  # files= names the source does not have

    @property
    def bytes_total(self) -> int:
        return sum(m.src.size for m in self.moves)


def _recent(names: list[str], src: Mapping[str, Side], n: int) -> list[str]:
    """The n newest by modification time (n < 0: the |n| oldest)."""
    if n == 0:
        return names
    ordered = sorted(names, key=lambda k: (src[k].mtime or 0.0, k))
    return ordered[-n:] if n > 0 else ordered[:-n]


def make_plan(direction: Direction, local: Mapping[str, Side], remote: Mapping[str, Side],
              state: dict[str, FileState], *, mode: str = "default", files: list[str] | None = None,
              nrecent: int = 0, merge_mode: str | None = None, equal: set[str] | None = None) -> Plan:
    """What to move from the source side to the destination side.

    ``equal``: names present on both sides without a recorded sync that are known
    to hold the same bytes (checked by the caller: size and mtime, or checksum).
    """
    src, dst = (remote, local) if direction == "pull" else (local, remote)
    plan = Plan(direction)
    forced = set(files) if files is not None else set()
    if files is not None:
        plan.missing = sorted(forced - src.keys())
        names = sorted(forced & src.keys())
    else:
        names = sorted(src)
    equal = equal or set()

    for name in _recent(names, src, nrecent):
        force = name in forced or mode == "all"
        s, d = src[name], dst.get(name)
        if d is None:
            if force or mode in ("new", "default"):
                plan.moves.append(Move(name, "new", s, None))
            continue
        if mode == "new" and not force:
            continue  # present on both sides: not new
        st = state.get(name)
        if st is None:
            if name in equal:
                if force:
                    plan.moves.append(Move(name, "forced", s, d))
                else:
                    plan.adopt.append(name)
                continue
            _conflict(plan, name, local[name], remote[name], s, d, merge_mode)
            continue
        lo, re_ = local[name], remote[name]
        local_moved = local_changed(lo.size, lo.mtime_ns or 0, st)
        remote_moved = remote_changed(re_.size, re_.mtime, re_.etag, st)
        src_changed, dst_changed = (remote_moved, local_moved) if direction == "pull" else (local_moved,
                                                                                           remote_moved)
        if dst_changed and (src_changed or force):
            _conflict(plan, name, local[name], remote[name], s, d, merge_mode)
        elif dst_changed:
            continue  # only the destination changed: the other direction's business
        elif src_changed:
            plan.moves.append(Move(name, "modified", s, d))
        elif force:
            plan.moves.append(Move(name, "forced", s, d))
    return plan


def _conflict(plan: Plan, name: str, local: Side, remote: Side, s: Side, d: Side,
              merge_mode: str | None) -> None:
    c = Conflict(name, local, remote)
    if merge_mode == "overwrite":
        plan.moves.append(Move(name, "overwrite", s, d))
    elif merge_mode == "keep":
        plan.kept.append(c)
    else:
        plan.conflicts.append(c)
