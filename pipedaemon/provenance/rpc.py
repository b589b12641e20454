"""The ``provenance.*`` methods, validated as the transfer-daemon SDK documents them.

``rel_type`` (or its alias ``relationship_type``) is a free-form verb of at most 255
characters, ``analysis_mode`` one of ANALYSIS_MODES, ``qualifier_time`` ISO 8601,
``qualifiers`` a JSON object. A wrong one is 1003 naming the field.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Literal

import msgspec

from pipedaemon_sdk.protocol import errors as E

from ..rpc import Context, Methods, ProfileParams
from . import refs
from .graph import Direction, Link

ANALYSIS_MODES = (
    "non_destructive",
    "altering",
    "destructive",
    "in_situ",
    "ex_situ",
    "invasive",
    "non_invasive",
)
MAX_REL_TYPE = 255
MAX_NOTE = 4096
MAX_QUALIFIERS = 16384  # bytes of the qualifiers as JSON
MAX_DEPTH = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class CreateRelationship(ProfileParams):
    from_ref: str
    to_ref: str
    rel_type: str | None = None
    relationship_type: str | None = None
    analysis_mode: str | None = None
    qualifier_note: str | None = None
    qualifier_time: str | None = None
    qualifiers: dict[str, Any] | None = None


class Relationships(ProfileParams):
    ref: str
    direction: Literal["out", "in", "both"] = "both"


class Lineage(ProfileParams):
    ref: str
    depth: int = 3
    direction: Literal["out", "in", "both"] = "out"


def _bad(field: str, why: str) -> E.InvalidSettingsError:
    return E.InvalidSettingsError(f"invalid {field}: {why}", {"field": field})


def link_of(p: CreateRelationship) -> Link:
    """The link's fields checked; 1003 naming the first wrong one."""
    if p.rel_type is not None and p.relationship_type is not None and p.rel_type != p.relationship_type:
        raise _bad("relationship_type", "an alias of rel_type: give one of them (or the same value)")
    rel = p.rel_type if p.rel_type is not None else p.relationship_type
    field = "rel_type" if p.rel_type is not None or p.relationship_type is None else "relationship_type"
    if rel is None or not rel.strip():
        raise _bad(field, "required: a free-form type such as 'derived_from'")
    if len(rel) > MAX_REL_TYPE:
        raise _bad(field, f"at most {MAX_REL_TYPE} characters ({len(rel)} given)")
    if _CONTROL.search(rel):
        raise _bad(field, "contains a control character")
    if p.analysis_mode is not None and p.analysis_mode not in ANALYSIS_MODES:
        raise _bad("analysis_mode", f"{p.analysis_mode!r} is not one of {', '.join(ANALYSIS_MODES)}")
    if p.qualifier_note is not None and len(p.qualifier_note) > MAX_NOTE:
        raise _bad("qualifier_note", f"at most {MAX_NOTE} characters ({len(p.qualifier_note)} given)")
    if p.qualifier_time is not None:
        try:
            datetime.datetime.fromisoformat(p.qualifier_time)
        except ValueError:
            raise _bad("qualifier_time", f"{p.qualifier_time!r} is not an ISO-8601 timestamp") from None
    if p.qualifiers is not None and len(msgspec.json.encode(p.qualifiers)) > MAX_QUALIFIERS:
        raise _bad("qualifiers", f"at most {MAX_QUALIFIERS} bytes as JSON")
    return Link(
        rel_type=rel,
        analysis_mode=p.analysis_mode,
        qualifier_note=p.qualifier_note,
        qualifier_time=p.qualifier_time,
        qualifiers=p.qualifiers,
    )


METHODS = Methods()


@METHODS.rpc("provenance.link", CreateRelationship)
async def provenance_link(ctx: Context, p: CreateRelationship) -> dict[str, Any]:
    """Record a directed link from one object version (the dependent) to another (its origin)."""
    link = link_of(p)
    src = await refs.current(ctx.daemon, p.profile, p.from_ref, "from_ref")
    dst = await refs.current(ctx.daemon, p.profile, p.to_ref, "to_ref")
    if src.id == dst.id:
        raise _bad("to_ref", f"{p.to_ref} is the same version as from_ref: a link to itself")
    edge, created = await ctx.daemon.provenance.add(p.profile, src, dst, link)
    return {**edge, "created": created}


@METHODS.rpc("provenance.relationships", Relationships)
async def provenance_relationships(ctx: Context, p: Relationships) -> dict[str, Any]:
    """Links at the version a ref names now (or the one given with @), and those at its other versions."""
    ref, version = await refs.named(ctx.daemon, p.profile, p.ref, "ref")
    everything = await ctx.daemon.provenance.edges(p.profile, ref, None, p.direction)

    def at(e: dict[str, Any]) -> bool:
        return (e["from_ref"] == ref and e["from_version"] == version) or (
            e["to_ref"] == ref and e["to_version"] == version
        )

    return {
        "ref": ref,
        "version": version,
        "relationships": [e for e in everything if at(e)],
        "other_versions": [e for e in everything if not at(e)],
    }


@METHODS.rpc("provenance.lineage", Lineage)
async def provenance_lineage(ctx: Context, p: Lineage) -> dict[str, Any]:
    """Walk the links from a version (out: what it came from; in: what came from it), cycles ended."""
    if not 0 <= p.depth <= MAX_DEPTH:
        raise _bad("depth", f"0 to {MAX_DEPTH} links")
    ref, version = await refs.named(ctx.daemon, p.profile, p.ref, "ref")
    if version is None:
        raise E.NotFoundError(f"{p.ref} does not exist now: name a version (ref@version)", {"ref": p.ref})
    direction: Direction = p.direction
    return await ctx.daemon.provenance.lineage(p.profile, ref, version, p.depth, direction)
