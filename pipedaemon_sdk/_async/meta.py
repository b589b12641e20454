"""Metadata, identity and provenance methods of both clients (the base of ``AsyncApi``).

Like every method in ``api.py`` each is written once, as a coroutine; the blocking twin of
``PipeClient`` is generated from it (tools/unasync.py).
"""

from __future__ import annotations

from typing import Any

from .._common import ClientSettings


class AsyncMetaApi(ClientSettings):
    """get_metadata / set_metadata, auth_status, create_relationship / relationships / lineage."""

    async def _call(self, method: str, params: dict[str, Any], convert: Any = None) -> Any:
        raise NotImplementedError

    # -- metadata -------------------------------------------------------------------
    async def get_metadata(self, remote: str, key: str, *, bucket: str | None = None) -> Any:
        """An object's metadata: title, description, alias, tags, metadata, stored_in, object."""
        return await self._call("object.get_metadata", self._p(remote=remote, key=key, bucket=bucket))

    async def set_metadata(self, remote: str, key: str, *, bucket: str | None = None, **fields: Any) -> Any:
        """Change fields (title, description, alias, tags, metadata); the merged record.

        A field left out is kept, ``None`` clears it; ``metadata`` merges key by key (a
        ``None`` value removes a key); ``tags`` replaces the list. On S3 the record is the
        object's own user metadata and tags, so other tools see it.
        """
        return await self._call(
            "object.set_metadata", self._p(remote=remote, key=key, bucket=bucket, fields=dict(fields))
        )

    # -- identity ---------------------------------------------------------------------
    async def auth_status(self, remote: str | None = None, write_probe: bool = True) -> Any:
        """Who the daemon acts as per remote (a list; a dict for one ``remote``): identity,
        can_read, can_write, temporary, expires_at, expired, error."""
        return await self._call("remote.auth_status", self._p(remote=remote, write_probe=write_probe))

    # -- provenance -------------------------------------------------------------------
    async def create_relationship(
        self,
        from_ref: str,
        to_ref: str,
        rel_type: str | None = None,
        *,
        relationship_type: str | None = None,
        analysis_mode: str | None = None,
        qualifier_note: str | None = None,
        qualifier_time: str | None = None,
        qualifiers: dict[str, Any] | None = None,
    ) -> Any:
        """Link the current version of ``from_ref`` (the dependent) to that of ``to_ref`` (its
        origin). Refs are ``"remote:key"`` or ``"pipe:name/file"``, optionally ``@version``."""
        return await self._call(
            "provenance.link",
            self._p(
                from_ref=from_ref,
                to_ref=to_ref,
                rel_type=rel_type,
                relationship_type=relationship_type,
                analysis_mode=analysis_mode,
                qualifier_note=qualifier_note,
                qualifier_time=qualifier_time,
                qualifiers=qualifiers,
            ),
        )

    async def relationships(self, ref: str, direction: str = "both") -> Any:
        """Links at the version ``ref`` names now (``relationships``) and at its other versions
        (``other_versions``); direction "out" (what it came from), "in" or "both"."""
        return await self._call("provenance.relationships", self._p(ref=ref, direction=direction))

    async def lineage(self, ref: str, depth: int = 3, direction: str = "out") -> Any:
        """The graph around a version, walked up to ``depth`` links: nodes, edges (``cycle``
        marks an edge on a cycle), cycles, truncated."""
        return await self._call("provenance.lineage", self._p(ref=ref, depth=depth, direction=direction))
