"""The SDK's shape: a protocol module the daemon imports alone, one flat face exporting every type
the methods return, and the blocking code generated from the asyncio code (one copy of logic)."""

from __future__ import annotations

import ast
import collections.abc
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest

import pipedaemon_sdk as sdk

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "pipedaemon_sdk"
sys.path.insert(0, str(ROOT / "tools"))
import unasync  # noqa: E402  (tools/ is not a package)


def test_the_protocol_loads_nothing_else_of_the_sdk() -> None:
    """What the daemon imports (errors, wire, paths, pipefiles) loads no client, job, autostart
    or asyncio: the package __init__ is lazy."""
    code = ("import json, sys; import pipedaemon_sdk.protocol.errors, pipedaemon_sdk.protocol.wire, "
            "pipedaemon_sdk.protocol.paths, pipedaemon_sdk.protocol.pipefiles; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    ours = [m for m in loaded if m.startswith("pipedaemon_sdk")]
    assert all(m == "pipedaemon_sdk" or m.startswith("pipedaemon_sdk.protocol") for m in ours), ours
    assert "asyncio" not in loaded and "threading" not in loaded


def test_the_protocol_imports_only_itself() -> None:
    """No module of pipedaemon_sdk/protocol/ imports the rest of the project (the bottom layer)."""
    for path in sorted((SDK / "protocol").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{path.name}: from {'.' * node.level}{node.module}"
                assert node.level == 1 or not (node.module or "").startswith("pipedaemon"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("pipedaemon") for a in node.names), path.name


def test_the_old_import_paths_are_the_same_objects() -> None:
    from pipedaemon_sdk import errors, paths, pipefiles, wire
    from pipedaemon_sdk.client import AsyncPipeClient, PipeClient
    from pipedaemon_sdk.job import AsyncJob, Job
    from pipedaemon_sdk.protocol import errors as perrors
    from pipedaemon_sdk.streams import AsyncObjectStream, ObjectStream
    from pipedaemon_sdk.watch import AsyncWatch, Watch

    assert errors is perrors and errors.NotFoundError is sdk.NotFoundError
    assert importlib.import_module("pipedaemon_sdk.errors") is perrors
    assert wire.UploadResult is sdk.UploadResult and paths.home_dir and pipefiles.name_filter
    assert (PipeClient, AsyncPipeClient, Job, AsyncJob) == (sdk.PipeClient, sdk.AsyncPipeClient, sdk.Job,
                                                            sdk.AsyncJob)
    assert (ObjectStream, AsyncObjectStream, Watch, AsyncWatch) == (
        sdk.ObjectStream, sdk.AsyncObjectStream, sdk.Watch, sdk.AsyncWatch)


def _types_in(hint: Any) -> set[type]:
    """The classes a return annotation names (through unions, containers, awaitables, iterators)."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return {hint}
    found: set[type] = set()
    for arg in typing.get_args(hint):
        found |= _types_in(arg)
    return found


def _public_methods(cls: type) -> dict[str, Any]:
    return {name: fn for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") or name in ("__enter__", "__aenter__", "__iter__", "__aiter__",
                                                    "__next__", "__anext__")}


def test_every_type_a_public_method_returns_is_exported() -> None:
    """Walk from the two clients through every public method's return annotation: each SDK class
    met is in ``pipedaemon_sdk.__all__`` (and is that object)."""
    names = {n: getattr(sdk, n) for n in sdk.__all__}
    todo: list[type] = [sdk.PipeClient, sdk.AsyncPipeClient]
    seen: set[type] = set()
    missing: list[str] = []
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for name, fn in _public_methods(cls).items():
            module = sys.modules[fn.__module__]
            try:
                hints = typing.get_type_hints(fn, globalns={**vars(module), **names})
            except NameError as exc:  # only a TYPE_CHECKING import names it, and sdk does not export it
                missing.append(f"{cls.__name__}.{name}: {exc}")
                continue
            for t in _types_in(hints.get("return")):
                if not t.__module__.startswith("pipedaemon_sdk"):
                    continue
                if names.get(t.__name__) is not t:
                    missing.append(f"{cls.__name__}.{name} returns {t.__module__}.{t.__name__}")
                todo.append(t)
    assert not missing, missing
    expected = {"UploadResult", "DownloadResult", "ObjectInfo", "Datastore", "Bucket", "ObjectStream",
                "AsyncObjectStream", "Job", "AsyncJob", "JobInfo", "Status", "Pipe", "Watch", "AsyncWatch",
                "Event", "SyncResult", "PipeLocal", "ProgressEvent"}
    assert expected <= set(sdk.__all__)
    assert {sdk.UploadResult, sdk.DownloadResult, sdk.Datastore, sdk.Bucket, sdk.Job, sdk.AsyncJob,
            sdk.Status, sdk.Pipe, sdk.Watch, sdk.AsyncWatch, sdk.Event} <= seen


def test_the_async_client_awaits_what_the_blocking_one_returns() -> None:
    """Same public names and signatures; a coroutine in AsyncPipeClient where PipeClient blocks, so
    a type checker sees ``AsyncPipeClient.status()`` as an awaitable of Status."""
    sync, aio = _public_methods(sdk.PipeClient), _public_methods(sdk.AsyncPipeClient)
    twin = {"__enter__": "__aenter__"}
    assert {twin.get(n, n) for n in sync} == set(aio)
    for name, fn in sync.items():
        afn = aio[twin.get(name, name)]
        assert not inspect.iscoroutinefunction(fn), name
        assert list(inspect.signature(fn).parameters) == list(inspect.signature(afn).parameters), name
    assert inspect.iscoroutinefunction(sdk.AsyncPipeClient.status)
    assert typing.get_type_hints(sdk.AsyncPipeClient.status)["return"] is sdk.Status
    assert inspect.iscoroutinefunction(sdk.AsyncJob.wait) and not inspect.iscoroutinefunction(sdk.Job.wait)
    assert inspect.isasyncgenfunction(sdk.AsyncObjectStream.stream)


def _all_sdk_modules() -> list[types.ModuleType]:
    mods = []
    for info in pkgutil.walk_packages([str(SDK)], "pipedaemon_sdk."):
        mods.append(importlib.import_module(info.name))
    return mods


def test_one_closed_marker_and_one_progress_callback_type() -> None:
    """The twins had drifted: two CLOSED markers, two ProgressCallback types. Now one each."""
    mods = _all_sdk_modules()
    closed = {id(m.CLOSED) for m in mods if hasattr(m, "CLOSED")}
    callbacks = {repr(m.ProgressCallback) for m in mods if hasattr(m, "ProgressCallback")}
    assert len(closed) == 1, [m.__name__ for m in mods if hasattr(m, "CLOSED")]
    assert len(callbacks) == 1, callbacks
    assert sdk.ProgressCallback == collections.abc.Callable[[sdk.ProgressEvent], object]


def test_the_generated_blocking_code_is_current() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "unasync.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_the_check_fails_on_a_stale_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "_sync"
    unasync.generate(stale)
    (stale / "job.py").write_text((stale / "job.py").read_text() + "x = 1\n")
    monkeypatch.setattr(unasync, "DST", stale)
    assert unasync.check() == 1
    (stale / "job.py").unlink()
    unasync.generate(stale)
    assert unasync.check() == 0
    (stale / "extra.py").write_text("")  # a file _async/ no longer has is stale too
    assert unasync.check() == 1


def test_unasync_rewrites_keywords_and_names() -> None:
    src = ('"""AsyncPipeClient, not MyAsyncPipeClient."""\n'
           "async def f(c: AsyncPipeClient) -> AsyncIterator[int]:\n"
           "    async with c:  # AsyncJob here\n"
           "        await c.connect()\n"
           "        async for x in c.__aiter__():\n"
           "            yield await async_write(x)\n"
           "    raise StopAsyncIteration\n")
    assert unasync.unasync(src) == ('"""PipeClient, not MyAsyncPipeClient."""\n'
                                    "def f(c: PipeClient) -> Iterator[int]:\n"
                                    "    with c:  # Job here\n"
                                    "        c.connect()\n"
                                    "        for x in c.__iter__():\n"
                                    "            yield write(x)\n"
                                    "    raise StopIteration\n")
