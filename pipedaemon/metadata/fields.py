"""Metadata beside the data: the fields, how an update merges, and the storage's limits.

The fields are the transfer-daemon SDK's (title, description, alias, tags and a free
``metadata`` dict). Where they are kept decides their limits: on S3 they are the
object's user metadata (``x-amz-meta-*``, 2 KiB in all) and its tags (10, key 128 /
value 256 characters, S3's character set); the daemon's own store (SFTP, FTP, local)
has the generous limits below. Over a limit is 1003 naming the field.
"""

from __future__ import annotations

import base64
import email.header
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from pipedaemon_sdk.protocol import errors as E

TEXT_FIELDS = ("title", "description", "alias")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline are fine in a description
_ONE_LINE_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class Record(msgspec.Struct, kw_only=True):
    """The metadata of one object."""

    title: str | None = None
    description: str | None = None
    alias: str | None = None
    tags: list[str] = []
    metadata: dict[str, Any] = {}


class Update(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; a field left out is kept, ``None`` clears it. ``metadata`` merges key
    by key (a ``None`` value removes that key); ``tags`` replaces the list."""

    title: str | msgspec.UnsetType | None = msgspec.UNSET
    description: str | msgspec.UnsetType | None = msgspec.UNSET
    alias: str | msgspec.UnsetType | None = msgspec.UNSET
    tags: list[str] | msgspec.UnsetType | None = msgspec.UNSET
    metadata: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET

    def given(self) -> bool:
        return any(getattr(self, f) is not msgspec.UNSET for f in self.__struct_fields__)


def merged(old: Record, up: Update) -> Record:
    out = msgspec.structs.replace(old, tags=list(old.tags), metadata=dict(old.metadata))
    for name in TEXT_FIELDS:
        value = getattr(up, name)
        if value is not msgspec.UNSET:
            setattr(out, name, value if value != "" else None)
    if up.tags is not msgspec.UNSET:
        out.tags = list(up.tags or [])
    if up.metadata is None:
        out.metadata = {}
    elif up.metadata is not msgspec.UNSET:
        for k, v in up.metadata.items():
            if v is None:
                out.metadata.pop(k, None)
            else:
                out.metadata[k] = v
    return out


def bad(field: str, why: str, **data: Any) -> E.InvalidSettingsError:
    return E.InvalidSettingsError(f"invalid metadata field {field}: {why}", {"field": field, **data})


# -- how S3 holds a record ---------------------------------------------------------------------
def header_value(text: str) -> str:
    """A value as an HTTP header can carry it: non-ASCII text RFC 2047 encoded, as S3 itself
    returns such values."""
    if text.isascii() and not _ONE_LINE_CONTROL.search(text):
        return text
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def from_header(value: str) -> str:
    if not (value.startswith("=?") and value.endswith("?=")):
        return value
    try:
        parts = email.header.decode_header(value)
    except (ValueError, LookupError):
        return value
    return "".join(p.decode(c or "utf-8", "replace") if isinstance(p, bytes) else p for p, c in parts)


def meta_text(value: Any) -> str:
    """A free metadata value as text: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def split_tag(tag: str) -> tuple[str, str]:
    """``"key=value"`` -> (key, value); a plain tag is a key with an empty value."""
    key, _, value = tag.partition("=")
    return key, value


def join_tag(key: str, value: str) -> str:
    return f"{key}={value}" if value else key


def to_native(rec: Record) -> tuple[dict[str, str], dict[str, str]]:
    """The record as S3 user metadata (names without ``x-amz-meta-``) and object tags."""
    meta = {k: meta_text(v) for k, v in rec.metadata.items()}
    for name in TEXT_FIELDS:
        value = getattr(rec, name)
        if value is not None:
            meta[name] = value
    return {k: header_value(v) for k, v in meta.items()}, dict(split_tag(t) for t in rec.tags)


def from_native(meta: dict[str, str], tags: dict[str, str], known: Record | None) -> Record:
    """A record from what S3 holds; values the daemon stored keep their types (a number it was
    given stays a number) when S3 still holds them unchanged."""
    text = {k.lower(): from_header(v) for k, v in meta.items()}
    rec = Record(**{name: text.pop(name, None) for name in TEXT_FIELDS})
    old = known.metadata if known else {}
    rec.metadata = {k: old[k] if k in old and meta_text(old[k]) == v else v for k, v in sorted(text.items())}
    order = {split_tag(t)[0]: i for i, t in enumerate(known.tags)} if known else {}
    rec.tags = [
        join_tag(k, v) for k, v in sorted(tags.items(), key=lambda kv: (order.get(kv[0], 1 << 30), kv[0]))
    ]
    return rec


# -- limits -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """What one kind of store can hold."""

    where: str
    max_tags: int
    tag_key: int  # characters
    tag_value: int
    tag_chars: re.Pattern[str] | None  # None: anything without control characters
    text: int  # characters of a title / alias; a description gets description_max
    description: int
    meta_key: int
    meta_key_chars: re.Pattern[str] | None
    meta_total: int  # bytes of every name and value together (S3: of the headers sent)
    native: bool  # the storage holds it (S3), else the daemon's own store


S3_TAG_CHARS = re.compile(r"^[\w +\-=.:/@]*\Z")  # S3 tags: letters, digits, spaces and + - = . _ : / @
# An HTTP header name (RFC 9110 token) in lower case: S3 lower-cases the names it is sent.
S3_META_KEY = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+\Z")

S3_LIMITS = Limits(
    where="S3 object metadata",
    max_tags=10,
    tag_key=128,
    tag_value=256,
    tag_chars=S3_TAG_CHARS,
    text=2048,
    description=2048,
    meta_key=128,
    meta_key_chars=S3_META_KEY,
    meta_total=2048,
    native=True,
)
STORE_LIMITS = Limits(
    where="the daemon's metadata store",
    max_tags=100,
    tag_key=256,
    tag_value=256,
    tag_chars=None,
    text=1024,
    description=16384,
    meta_key=256,
    meta_key_chars=None,
    meta_total=65536,
    native=False,
)


def check(rec: Record, lim: Limits) -> None:
    """Refuse (1003, naming the field) what the store cannot hold."""
    for name in TEXT_FIELDS:
        value = getattr(rec, name)
        if value is None:
            continue
        most = lim.description if name == "description" else (128 if name == "alias" else lim.text)
        if len(value) > most:
            raise bad(name, f"longer than {most} characters ({len(value)}) for {lim.where}", limit=most)
        control = _CONTROL if name == "description" else _ONE_LINE_CONTROL
        if control.search(value):
            raise bad(name, "contains a control character")
    if rec.alias is not None and not ALIAS_RE.match(rec.alias):
        raise bad(
            "alias", "a short identifier: letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    _check_tags(rec.tags, lim)
    _check_meta(rec, lim)


def _check_tags(tags: list[str], lim: Limits) -> None:
    if len(tags) > lim.max_tags:
        raise bad("tags", f"{len(tags)} tags; {lim.where} holds at most {lim.max_tags}", limit=lim.max_tags)
    seen: set[str] = set()
    for i, tag in enumerate(tags):
        field = f"tags[{i}]"
        key, value = split_tag(tag)
        if not key:
            raise bad(field, "empty tag (or empty key before '=')")
        if len(key) > lim.tag_key:
            raise bad(field, f"tag key longer than {lim.tag_key} characters", limit=lim.tag_key)
        if len(value) > lim.tag_value:
            raise bad(field, f"tag value longer than {lim.tag_value} characters", limit=lim.tag_value)
        if _ONE_LINE_CONTROL.search(tag):
            raise bad(field, "contains a control character")
        if lim.tag_chars is not None and not lim.tag_chars.match(tag):
            raise bad(field, f"{lim.where} allows letters, digits, spaces and + - = . _ : / @ only")
        if lim.native and key.lower().startswith("aws:"):
            raise bad(field, "tag keys starting with 'aws:' are reserved by AWS")
        if key in seen:
            raise bad(field, f"tag key {key!r} given twice")
        seen.add(key)


def _check_meta(rec: Record, lim: Limits) -> None:
    for key in rec.metadata:
        field = f"metadata.{key}"
        if not key or len(key) > lim.meta_key:
            raise bad(field, f"a name of 1 to {lim.meta_key} characters", limit=lim.meta_key)
        if key.lower() in TEXT_FIELDS:
            raise bad(field, f"{key!r} is a field of its own: pass {key}=... instead")
        if _ONE_LINE_CONTROL.search(key):
            raise bad(field, "the name contains a control character")
        if lim.meta_key_chars is not None and not lim.meta_key_chars.match(key):
            raise bad(field, f"{lim.where} names are HTTP header names in lower case (letters, digits, "
                             "and ! # $ % & ' * + . ^ _ ` | ~ -)")
    total = meta_size(rec, lim)
    if total > lim.meta_total:
        field = "metadata" if rec.metadata else next(n for n in TEXT_FIELDS if getattr(rec, n))
        raise bad(
            field,
            f"{total} bytes of metadata; {lim.where} holds at most {lim.meta_total}",
            limit=lim.meta_total,
            size=total,
        )


def meta_size(rec: Record, lim: Limits) -> int:
    """S3 counts the UTF-8 bytes of every user-metadata name and value (title, description
    and alias are user metadata there too); the daemon's store counts the free dict as JSON."""
    if lim.native:
        meta, _ = to_native(rec)
        return sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())
    return len(msgspec.json.encode(rec.metadata)) if rec.metadata else 0
