"""A pipe's local files: glob filters, folder scans, sorting and imports.

Standard library only: the daemon uses this module for pipes, and ``PipeLocal``
uses it in the caller's process without any daemon. File names are relative to
the pipe's folder, with ``/``.

Filters follow d6tpipe: ``include``/``exclude`` are glob patterns joined with
``|`` (``"*.csv|*.xls"``). A pattern matches a file's whole relative name (``*``
also crosses ``/``), and a pattern without ``/`` matches its base name too, so
``"daily*.csv"`` finds ``2024/daily-01.csv``. Matching is case-sensitive.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import InvalidSettingsError, NotFoundError, UnsafePathError

TMP_MARK = ".pdpart"  # the transfer engine's temporary names (pipedaemon/transfer/common.py)
SORT_KEYS = {"filename": "filename", "name": "filename", "modified_at": "modified_at", "mod": "modified_at",
             "size": "size"}


class LocalFile:
    """A file of a pipe's local folder; it is also the daemon's plan ``Side`` of it (one object
    per file: a million files' views fit in the daemon's memory)."""

    __slots__ = ("mtime_ns", "name", "size")
    etag: None = None  # a local copy has no storage ETag

    def __init__(self, name: str, size: int, mtime_ns: int) -> None:
        self.name = name
        self.size = size
        self.mtime_ns = mtime_ns

    @property
    def modified_at(self) -> float:
        return self.mtime_ns / 1e9

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    def row(self) -> dict[str, Any]:
        return {"filename": self.name, "size": self.size, "modified_at": self.modified_at}


# -- patterns --------------------------------------------------------------------------
def _bracket_ok(alt: str) -> bool:
    """True when every '[' opens a class that closes (fnmatch would take it literally)."""
    i, n = 0, len(alt)
    while i < n:
        if alt[i] == "[":
            j = i + 1
            if j < n and alt[j] == "!":
                j += 1
            if j < n and alt[j] == "]":
                j += 1
            while j < n and alt[j] != "]":
                j += 1
            if j >= n:
                return False
            i = j
        i += 1
    return True


def split_pattern(pattern: str | None, field: str = "include") -> list[str]:
    """The alternatives of a ``|``-joined pattern, checked (InvalidSettingsError, 1003)."""
    if pattern is None:
        return []
    if not isinstance(pattern, str):
        raise InvalidSettingsError(f"{field} must be a string of glob patterns", {"field": field})
    alts = [a.strip() for a in pattern.split("|")]
    for alt in alts:
        why = None
        if not alt:
            why = "an empty alternative (check for a stray '|')"
        elif any(ord(c) < 32 for c in alt):
            why = "a control character"
        elif alt.startswith("/") or ".." in alt.replace("\\", "/").split("/"):
            why = "names are relative to the pipe's folder ('/' at the start or '..')"
        elif not _bracket_ok(alt):
            why = "a '[' without its ']'"
        if why:
            raise InvalidSettingsError(f"invalid pattern {pattern!r} in {field}: {why}",
                                       {"field": field, "pattern": pattern})
    return alts


def compile_pattern(pattern: str | None, field: str = "include") -> Callable[[str], bool] | None:
    """A predicate for names matching any alternative, or None for no pattern."""
    alts = split_pattern(pattern, field)
    if not alts:
        return None
    full = re.compile("|".join(f"(?:{fnmatch.translate(a)})" for a in alts))
    base_alts = [a for a in alts if "/" not in a]
    base = re.compile("|".join(f"(?:{fnmatch.translate(a)})" for a in base_alts)) if base_alts else None

    def match(name: str) -> bool:
        if full.match(name):
            return True
        return base is not None and base.match(name.rsplit("/", 1)[-1]) is not None

    return match


def name_filter(include: str | None = None, exclude: str | None = None) -> Callable[[str], bool]:
    inc = compile_pattern(include, "include")
    exc = compile_pattern(exclude, "exclude")

    def keep(name: str) -> bool:
        return (inc is None or inc(name)) and not (exc is not None and exc(name))

    return keep


def sort_rows(rows: list[dict[str, Any]], sortby: str | None) -> list[dict[str, Any]]:
    key = SORT_KEYS.get(sortby or "filename")
    if key is None:
        raise InvalidSettingsError(f"sortby must be one of filename, modified_at, size (not {sortby!r})",
                                   {"field": "sortby"})
    if key == "filename":
        return sorted(rows, key=lambda r: r["filename"])
    return sorted(rows, key=lambda r: (r.get(key) is None, r.get(key) or 0, r["filename"]))


# -- names -----------------------------------------------------------------------------
def clean_name(name: str) -> str:
    """A safe relative file name (``/``-separated) or UnsafePathError (1010)."""
    if not isinstance(name, str) or not name or "\0" in name or any(ord(c) < 32 for c in name):
        raise UnsafePathError(f"unsafe file name {name!r}", {"path": str(name)})
    if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
        raise UnsafePathError(f"unsafe file name {name!r}: it would leave the pipe's folder", {"path": name})
    out = "/".join(p for p in name.split("/") if p not in ("", "."))
    if not out:
        raise UnsafePathError(f"unsafe file name {name!r}", {"path": name})
    return out


# -- scanning --------------------------------------------------------------------------
def scan_dir(root: Path) -> list[LocalFile]:
    """Every file under ``root`` (recursively), skipping our temporary names.

    Links to files are followed; linked folders are not entered (they may loop or
    lead out of the pipe's folder). A missing folder has no files.
    """
    out: list[LocalFile] = []
    stack = [("", str(root))]
    while stack:
        rel, path = stack.pop()
        try:
            it = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for de in it:
                name = f"{rel}/{de.name}" if rel else de.name
                try:
                    if de.is_dir(follow_symlinks=False):
                        stack.append((name, de.path))
                    elif de.is_file() and TMP_MARK not in de.name:
                        st = de.stat()
                        out.append(LocalFile(name, st.st_size, st.st_mtime_ns))
                except FileNotFoundError:
                    continue  # removed while we looked, or a dangling link
    return out


def local_rows(root: Path, include: str | None = None, exclude: str | None = None,
               sortby: str | None = "filename", files: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The pipe's local files as rows (filename, size, modified_at), filtered and sorted."""
    keep = name_filter(include, exclude)
    wanted = {clean_name(f) for f in files} if files is not None else None
    rows = [f.row() for f in scan_dir(root) if keep(f.name) and (wanted is None or f.name in wanted)]
    return sort_rows(rows, sortby)


# -- importing -------------------------------------------------------------------------
def _place(src: Path, dst: Path, move: bool) -> None:
    """Copy or move ``src`` to ``dst``; the final name appears only complete."""
    import shutil
    import uuid

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}{TMP_MARK}-{uuid.uuid4().hex[:8]}")
    try:
        if move:
            shutil.move(str(src), tmp)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def import_paths(dirpath: Path, paths: Iterable[str | os.PathLike[str]], subdir: str | None = None,
                 move: bool = False, tree: bool = False) -> list[str]:
    """Copy (or move) files into the pipe's folder; their names there.

    ``tree``: each path is a folder imported with its sub-folders; else each path
    is a file placed under ``subdir`` by its base name.
    """
    prefix = clean_name(subdir) + "/" if subdir else ""
    plan: list[tuple[Path, str]] = []
    for p in paths:
        src = Path(p).expanduser().absolute()
        if tree:
            if not src.is_dir():
                raise NotFoundError(f"no such folder: {src}", {"path": str(src)})
            plan += [(src / f.name, prefix + f.name) for f in scan_dir(src)]
        elif not src.is_file():
            raise NotFoundError(f"no such file: {src}", {"path": str(src)})
        else:
            plan.append((src, prefix + clean_name(src.name)))
    base = dirpath.resolve() if dirpath.exists() else dirpath.absolute()
    out = []
    for src, name in plan:
        dst = base.joinpath(*name.split("/"))
        if src.resolve() == dst.resolve():
            continue  # already in place
        _place(src, dst, move)
        out.append(name)
    return out
