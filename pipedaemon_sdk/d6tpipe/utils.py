"""d6tpipe.utils: settings files (JSON or YAML) and md5, standard library first."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def filemd5(fname: str | os.PathLike[str]) -> str:
    h = hashlib.md5()
    with open(fname, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def loadyaml(path: str | os.PathLike[str], encoding: str = "utf-8") -> Any:
    """A YAML file's content (safe loading: no Python objects from the file)."""
    with open(path, encoding=encoding) as f:
        text = f.read()
    try:
        import yaml  # only here: the SDK itself stays light
    except ImportError:
        return json.loads(text)  # without PyYAML, JSON files still load
    return yaml.safe_load(text)


def loadjson(path: str | os.PathLike[str], encoding: str = "utf-8", strict: bool = False) -> Any:
    """A settings file: strict JSON with ``strict``, else YAML (which reads JSON, and also
    JSON without quotes, as d6tpipe's loader does)."""
    if strict:
        with open(path, encoding=encoding) as f:
            return json.load(f)
    return loadyaml(path, encoding)


__all__ = ["filemd5", "loadjson", "loadyaml"]
