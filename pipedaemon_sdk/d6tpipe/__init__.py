"""d6tpipe's API on pipedaemon: port a d6tpipe script by changing its import.

    import pipedaemon_sdk.d6tpipe as d6tpipe

    api = d6tpipe.api.APILocal()
    pipe = d6tpipe.Pipe(api, "vendor-daily")
    pipe.pull()

The names, arguments, defaults and results are d6tpipe 1.2.7's (local mode); the
daemon plans and moves the files (parallel, verified, resumable) and keeps the
credentials. Light like the rest of the SDK: standard library and msgspec only.
What differs and why: docs/d6tpipe.md.
"""

from __future__ import annotations

from . import api, exceptions, pipe, utils
from .api import (
    APIClient,
    APILocal,
    ConfigManager,
    list_profiles,
    upsert_permissions,
    upsert_pipe,
    upsert_pipe_json,
    upsert_resource,
)
from .pipe import Pipe, PipeLocal

__all__ = ["APIClient", "APILocal", "ConfigManager", "Pipe", "PipeLocal", "api", "exceptions",
           "list_profiles", "pipe", "upsert_permissions", "upsert_pipe", "upsert_pipe_json",
           "upsert_resource",
           "utils"]
