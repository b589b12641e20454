"""Metadata, identity and provenance commands: ``meta get|set``, ``auth``, ``link``, ``links``, ``lineage``.

An object is ``REMOTE:KEY`` (the key under the remote's root) or ``pipe:NAME/FILE``
(a pipe file: for ``meta`` its object on the pipe's remote, for links its local copy);
refs for links may end in ``@VERSION`` to name one version.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pipedaemon_sdk import PipeClient

from .common import client, emit, handle_errors, main_group

MODES = ("non_destructive", "altering", "destructive", "in_situ", "ex_situ", "invasive", "non_invasive")


def _pairs(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """``k=v`` pairs; a value that is JSON (a number, true, a list) keeps its type."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _json_object(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=what) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=what)
    return value


def _meta_call(c: PipeClient, target: str, fields: dict[str, Any] | None) -> Any:
    if target.startswith("pipe:"):
        name, _, file = target[5:].partition("/")
        if not name or not file:
            raise click.BadParameter(f"{target!r} is not pipe:NAME/FILE", param_hint="TARGET")
        pipe = c.pipe(name)
        return pipe.get_metadata(file) if fields is None else pipe.set_metadata(file, **fields)
    remote, sep, key = target.partition(":")
    if not sep or not remote or not key:
        raise click.BadParameter(f"{target!r} is not REMOTE:KEY or pipe:NAME/FILE", param_hint="TARGET")
    return c.get_metadata(remote, key) if fields is None else c.set_metadata(remote, key, **fields)


def _meta_text(rec: dict[str, Any]) -> str:
    lines = [f"{rec['remote']}:{rec['key']}  (stored in {rec['stored_in']})"]
    for name in ("title", "description", "alias"):
        if rec.get(name) is not None:
            lines.append(f"  {name}: {rec[name]}")
    if rec.get("tags"):
        lines.append(f"  tags: {', '.join(rec['tags'])}")
    for k, v in sorted(rec.get("metadata", {}).items()):
        lines.append(f"  metadata.{k}: {json.dumps(v) if not isinstance(v, str) else v}")
    return "\n".join(lines)


@main_group.group("meta")
def meta_group() -> None:
    """Read and change metadata beside an object (S3: its own user metadata and tags)."""


@meta_group.command("get")
@click.argument("target")
@click.pass_context
@handle_errors
def meta_get(ctx: click.Context, target: str) -> None:
    """Show the metadata of REMOTE:KEY or pipe:NAME/FILE."""
    emit(ctx, _meta_call(client(ctx), target, None), _meta_text)


@meta_group.command("set")
@click.argument("target")
@click.option("--title", default=None, help="Title ('' clears it).")
@click.option("--description", default=None, help="Free text ('' clears it).")
@click.option("--alias", default=None, help="Short identifier ('' clears it).")
@click.option("--tag", "tags", multiple=True, help="A tag (TAG or KEY=VALUE); repeat; replaces the tags.")
@click.option("--no-tags", is_flag=True, help="Remove every tag.")
@click.option("--meta", "pairs", multiple=True, help="KEY=VALUE into the free metadata; 'KEY=' removes KEY.")
@click.option("--metadata-json", default=None, help="A JSON object merged into the free metadata.")
@click.pass_context
@handle_errors
def meta_set(ctx: click.Context, target: str, title: str | None, description: str | None, alias: str | None,
             tags: tuple[str, ...], no_tags: bool, pairs: tuple[str, ...], metadata_json: str | None) -> None:
    """Change fields of the metadata of REMOTE:KEY or pipe:NAME/FILE; prints the merged record."""
    fields: dict[str, Any] = {k: v for k, v in (("title", title), ("description", description),
                                                 ("alias", alias)) if v is not None}
    if tags or no_tags:
        fields["tags"] = list(tags)
    merged = _json_object(metadata_json, "--metadata-json") or {}
    merged.update({k: (None if v == "" else v) for k, v in _pairs(pairs, "--meta").items()})
    if merged:
        fields["metadata"] = merged
    if not fields:
        raise click.UsageError("nothing to set: give --title, --description, --alias, --tag, --meta ...")
    emit(ctx, _meta_call(client(ctx), target, fields), _meta_text)


def _auth_text(rows: Any) -> str:
    out = []
    for r in rows if isinstance(rows, list) else [rows]:
        state = "ok" if r.get("ok") else "FAILED"
        rw = f"read={'yes' if r.get('can_read') else 'no'} write=" + \
            {True: "yes", False: "no", None: "not tried"}[r.get("can_write")]
        who = r.get("identity") or "?"
        if r.get("write_identity"):
            who += f" (writes as {r['write_identity']})"
        expiry = ""
        if r.get("expires_at"):
            expiry = f" expires {r['expires_at']}" + (" (EXPIRED)" if r.get("expired") else "")
        line = f"{r['remote']}: {state} as {who} {rw}{expiry}"
        if r.get("error"):
            line += f"\n  error: {r['error']['message']} [code {r['error']['code']}]"
        out.append(line)
    return "\n".join(out) or "no remotes"


@main_group.command("auth")
@click.argument("remote", required=False)
@click.option("--no-write-probe", is_flag=True, help="Only read (no probe file is written).")
@click.pass_context
@handle_errors
def auth(ctx: click.Context, remote: str | None, no_write_probe: bool) -> None:
    """Who the daemon acts as on each remote (or REMOTE), and whether reading and writing work."""
    rows = client(ctx).auth_status(remote, write_probe=not no_write_probe)
    emit(ctx, rows, _auth_text)
    bad = [r for r in (rows if isinstance(rows, list) else [rows]) if not r.get("ok")]
    if bad:
        ctx.exit(1)


def _edge_text(e: dict[str, Any]) -> str:
    mode = f" [{e['analysis_mode']}]" if e.get("analysis_mode") else ""
    return f"{e['from']} --{e['type']}{mode}--> {e['to']}" + ("  (cycle)" if e.get("cycle") else "")


@main_group.command("link")
@click.argument("from_ref")
@click.argument("to_ref")
@click.option("--type", "rel_type", required=True, help="Free-form relationship type, e.g. derived_from.")
@click.option("--mode", "analysis_mode", type=click.Choice(MODES), default=None, help="Analysis mode.")
@click.option("--note", "qualifier_note", default=None, help="Free-text note.")
@click.option("--time", "qualifier_time", default=None, help="ISO-8601 timestamp.")
@click.option("--qualifier", "pairs", multiple=True, help="KEY=VALUE qualifier; repeat.")
@click.option("--qualifiers-json", default=None, help="Qualifiers as a JSON object.")
@click.pass_context
@handle_errors
def link(ctx: click.Context, from_ref: str, to_ref: str, rel_type: str, analysis_mode: str | None,
         qualifier_note: str | None, qualifier_time: str | None, pairs: tuple[str, ...],
         qualifiers_json: str | None) -> None:
    """Record that FROM_REF (the dependent) relates to TO_REF (its origin), version to version."""
    quals = _json_object(qualifiers_json, "--qualifiers-json")
    if pairs:
        quals = {**(quals or {}), **_pairs(pairs, "--qualifier")}
    edge = client(ctx).create_relationship(from_ref, to_ref, rel_type, analysis_mode=analysis_mode,
                                           qualifier_note=qualifier_note, qualifier_time=qualifier_time,
                                           qualifiers=quals)
    emit(ctx, edge, lambda e: ("linked " if e["created"] else "already linked ") + _edge_text(e))


@main_group.command("links")
@click.argument("ref")
@click.option("--direction", type=click.Choice(["out", "in", "both"]), default="both", show_default=True)
@click.pass_context
@handle_errors
def links(ctx: click.Context, ref: str, direction: str) -> None:
    """Links at the version REF names now, and those at its other versions."""
    def human(r: dict[str, Any]) -> str:
        lines = [f"{r['ref']}@{r['version'] or '(gone)'}"]
        lines += [f"  {_edge_text(e)}" for e in r["relationships"]]
        if r["other_versions"]:
            lines += ["other versions:"] + [f"  {_edge_text(e)}" for e in r["other_versions"]]
        return "\n".join(lines)

    emit(ctx, client(ctx).relationships(ref, direction=direction), human)


@main_group.command("lineage")
@click.argument("ref")
@click.option("--depth", type=int, default=3, show_default=True, help="Links to follow (at most 64).")
@click.option("--direction", type=click.Choice(["out", "in", "both"]), default="out", show_default=True,
              help="out: what REF came from; in: what came from REF.")
@click.pass_context
@handle_errors
def lineage(ctx: click.Context, ref: str, depth: int, direction: str) -> None:
    """Walk the links from REF's version, cycles ended and marked."""
    def human(r: dict[str, Any]) -> str:
        lines = [f"{'  ' * n['depth']}{n['id']}" for n in r["nodes"]]
        lines += ["links:"] + [f"  {_edge_text(e)}" for e in r["edges"]] if r["edges"] else []
        if r["truncated"]:
            lines.append(f"(more beyond depth {r['depth']})")
        return "\n".join(lines)

    emit(ctx, client(ctx).lineage(ref, depth=depth, direction=direction), human)
