"""Untrusted names (safety rule 3): keys and remote listings never escape their folder."""

from __future__ import annotations

import os
from pathlib import Path

from pipedaemon_sdk.protocol import errors as E

MAX_NAME = 1024
# One component of a local path: NAME_MAX, less room for the engine's temporary name beside it
# (".<name>.pdpart-<job id>"): a longer name cannot be downloaded, and fails before any write.
LOCAL_COMPONENT = 255
LOCAL_FILE_NAME = LOCAL_COMPONENT - 32


def _unsafe(key: str, why: str) -> E.UnsafePathError:
    return E.UnsafePathError(f"unsafe name {key!r}: {why}", {"path": key, "reason": why})


def clean_key(key: str, *, allow_empty: bool = False) -> str:
    """A relative ``/``-separated name, checked; trailing ``/`` kept for folders.

    Refused (1010): absolute names, ``..`` anywhere (also behind backslashes, which
    some stores and tools treat as separators), NUL, control characters, and names
    longer than MAX_NAME.
    """
    if not isinstance(key, str):
        raise _unsafe(str(key), "not a string")
    if "\0" in key:
        raise _unsafe(key, "contains NUL")
    if any(ord(c) < 32 for c in key):
        raise _unsafe(key, "contains a control character")
    if len(key.encode()) > MAX_NAME:
        raise _unsafe(key[:64] + "…", f"longer than {MAX_NAME} bytes")
    if key.startswith(("/", "\\")) or (len(key) > 1 and key[1] == ":" and key[0].isalpha()):
        raise _unsafe(key, "absolute path")
    parts = key.replace("\\", "/").split("/")
    if ".." in parts:
        raise _unsafe(key, "'..' would leave the folder")
    kept = [p for p in key.split("/") if p not in ("", ".")]
    out = "/".join(kept)
    if key.endswith("/") and out:
        out += "/"
    if not out and not allow_empty:
        raise _unsafe(key, "empty name")
    return out


def join(root: str, key: str, *, allow_empty: bool = False) -> str:
    """The backend path of ``key`` under ``root`` (which ends in '/' or is '')."""
    return root + clean_key(key, allow_empty=allow_empty)


def check_local_lengths(name: str, rel: str) -> None:
    """Refuse (1010) a relative name no local file system could hold (ENAMETOOLONG)."""
    *folders, file = rel.rstrip("/").split("/")
    if any(len(p.encode()) > LOCAL_COMPONENT for p in folders) or len(file.encode()) > LOCAL_FILE_NAME:
        raise _unsafe(name[:64] + "…", f"a part of the name is too long for the local file system "
                      f"(files: {LOCAL_FILE_NAME} bytes, folders: {LOCAL_COMPONENT})")


def local_target(folder: Path, name: str) -> Path:
    """The local path for a relative ``name`` inside ``folder``, never outside it.

    Refuses names that are unsafe in themselves, too long for a local file system,
    and names whose existing parent folders are symlinks leading out of ``folder``.
    """
    rel = clean_key(name)
    check_local_lengths(name, rel)
    base = folder.resolve()
    target = base.joinpath(*rel.rstrip("/").split("/"))
    parent = target.parent.resolve()
    if parent != base and base not in parent.parents:
        raise _unsafe(name, "a folder on the way is a link out of the destination")
    if target.is_symlink():
        real = Path(os.path.realpath(target))
        if real != base and base not in real.parents:
            raise _unsafe(name, "the file is a link out of the destination")
    return target
