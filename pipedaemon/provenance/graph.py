"""Provenance edges between object versions, in the daemon's state, and walks over them.

An edge goes from the dependent version (``from``: the result, the copy) to its origin
(``to``: the source it was derived from), as the transfer-daemon SDK's relationships
do. ``lineage`` walks them breadth first up to a depth; a version met again is not
walked again, so cycles end, and the edges that close one are marked.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Literal

import msgspec

from pipedaemon_sdk.protocol import errors as E

from .refs import Node

Direction = Literal["out", "in", "both"]
_COLUMNS = (
    "id, from_ref, from_version, from_identity, to_ref, to_version, to_identity, rel_type, "
    "analysis_mode, qualifier_note, qualifier_time, qualifiers, created_at"
)


class Link(msgspec.Struct, kw_only=True):
    rel_type: str
    analysis_mode: str | None = None
    qualifier_note: str | None = None
    qualifier_time: str | None = None
    qualifiers: dict[str, Any] | None = None


def _edge(row: Any) -> dict[str, Any]:
    (eid, fref, fver, fid, tref, tver, tid, rel, mode, note, qtime, quals, created) = row
    return {
        "id": eid,
        "from": f"{fref}@{fver}",
        "to": f"{tref}@{tver}",
        "from_ref": fref,
        "from_version": fver,
        "to_ref": tref,
        "to_version": tver,
        "from_identity": msgspec.json.decode(fid),
        "to_identity": msgspec.json.decode(tid),
        "type": rel,
        "analysis_mode": mode,
        "qualifier_note": note,
        "qualifier_time": qtime,
        "qualifiers": msgspec.json.decode(quals) if quals else None,
        "created_at": created,
    }


class Graph:
    def __init__(self, state: Any) -> None:
        self.state = state

    async def add(self, profile: str, src: Node, dst: Node, link: Link) -> tuple[dict[str, Any], bool]:
        """Record ``src -> dst``; the same link again is the one recorded before (created False)."""
        n = await self.state.execute(
            "INSERT OR IGNORE INTO prov_edges(profile, from_ref, from_version, from_identity, to_ref, "
            "to_version, "
            "to_identity, rel_type, analysis_mode, qualifier_note, qualifier_time, qualifiers, created_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                profile,
                src.ref,
                src.version,
                msgspec.json.encode(src.identity),
                dst.ref,
                dst.version,
                msgspec.json.encode(dst.identity),
                link.rel_type,
                link.analysis_mode,
                link.qualifier_note,
                link.qualifier_time,
                msgspec.json.encode(link.qualifiers) if link.qualifiers is not None else None,
                time.time(),
            ),
        )
        row = await self.state.fetchone(
            f"SELECT {_COLUMNS} FROM prov_edges WHERE profile=? AND from_ref=? AND from_version=? "
            "AND to_ref=? "
            "AND to_version=? AND rel_type=?",
            (profile, src.ref, src.version, dst.ref, dst.version, link.rel_type),
        )
        edge = _edge(row)
        told = (link.analysis_mode, link.qualifier_note, link.qualifier_time, link.qualifiers)
        had = tuple(edge[k] for k in ("analysis_mode", "qualifier_note", "qualifier_time", "qualifiers"))
        if not n and had != told:
            raise E.AlreadyExistsError(
                f"this {link.rel_type} link is recorded already (id {edge['id']}) with other qualifiers; "
                "links are not changed", {"id": edge["id"]})
        return edge, n > 0

    async def edges(
        self, profile: str, ref: str, version: str | None, direction: Direction
    ) -> list[dict[str, Any]]:
        """Edges at one version of ``ref`` (every version with ``version=None``)."""
        sides = {"out": ["from"], "in": ["to"], "both": ["from", "to"]}[direction]
        out: list[dict[str, Any]] = []
        seen: set[int] = set()
        for side in sides:
            where = f"profile=? AND {side}_ref=?" + (f" AND {side}_version=?" if version is not None else "")
            args = (profile, ref, version) if version is not None else (profile, ref)
            for row in await self.state.fetchall(
                f"SELECT {_COLUMNS} FROM prov_edges WHERE {where} ORDER BY id", args
            ):
                if row[0] not in seen:
                    seen.add(row[0])
                    out.append(_edge(row))
        return sorted(out, key=lambda e: e["id"])

    async def lineage(
        self, profile: str, ref: str, version: str, depth: int, direction: Direction
    ) -> dict[str, Any]:
        root = f"{ref}@{version}"
        depth_of: dict[str, int] = {root: 0}
        parts: dict[str, tuple[str, str]] = {root: (ref, version)}
        edges: dict[int, dict[str, Any]] = {}
        queue = deque([root])
        truncated = False
        while queue:
            node = queue.popleft()
            nref, nver = parts[node]
            for e in await self.edges(profile, nref, nver, direction):
                far = e["to"] if e["from"] == node else e["from"]
                if depth_of[node] >= depth:
                    truncated = truncated or far not in depth_of or e["id"] not in edges
                    continue
                edges.setdefault(e["id"], e)
                if far not in depth_of:
                    depth_of[far] = depth_of[node] + 1
                    parts[far] = (
                        (e["to_ref"], e["to_version"])
                        if far == e["to"]
                        else (e["from_ref"], e["from_version"])
                    )
                    queue.append(far)
        cycle_ids = _cycle_edges(list(edges.values()))
        listed = [{**e, "cycle": e["id"] in cycle_ids} for e in sorted(edges.values(), key=lambda e: e["id"])]
        nodes = [
            {"id": n, "ref": parts[n][0], "version": parts[n][1], "depth": d}
            for n, d in sorted(depth_of.items(), key=lambda kv: (kv[1], kv[0]))
        ]
        return {
            "root": root,
            "direction": direction,
            "depth": depth,
            "nodes": nodes,
            "edges": listed,
            "cycles": len(cycle_ids),
            "truncated": truncated,
        }


def _cycle_edges(edges: list[dict[str, Any]]) -> set[int]:
    """Edges lying on a directed cycle: both ends in the same strongly connected component
    (a self-loop is refused at creation)."""
    graph: dict[str, list[str]] = {}
    for e in edges:
        graph.setdefault(e["from"], []).append(e["to"])
        graph.setdefault(e["to"], [])
    comp = _components(graph)
    return {e["id"] for e in edges if comp[e["from"]] == comp[e["to"]]}


def _components(graph: dict[str, list[str]]) -> dict[str, int]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    comp: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = graph[node]
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp[w] = index[node]
                    if w == node:
                        break
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return comp
