"""``pipedaemon meta get|set``, ``link``, ``links``, ``lineage`` and ``auth`` as users run them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import DaemonError, PipeClient
from pipedaemon_sdk.errors import DaemonConnectionError
from tests.support.storage import settings_of


def pd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipedaemon", *args], text=True, capture_output=True,
                          timeout=120, env=dict(os.environ), start_new_session=True)


def pd_json(*args: str) -> Any:
    res = pd("--json", *args)
    assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


@pytest.fixture
def remote(pd_env: dict[str, Path], local_spec: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    with PipeClient() as c:
        c.upsert_remote(settings_of(local_spec, "loc"))
        for name in ("raw.csv", "out.csv"):
            (tmp_path / name).write_text(name)
            c.upload(tmp_path / name, remote="loc", key=f"d/{name}")
    yield "loc"
    with contextlib.suppress(DaemonError, DaemonConnectionError, OSError), PipeClient(auto_start=False) as c:
        c.shutdown()


def test_meta_link_lineage(remote: str) -> None:
    rec = pd_json("meta", "set", "loc:d/raw.csv", "--title", "Raw", "--tag", "csv", "--tag", "site=n",
                  "--meta", "rows=2", "--meta", "unit=m")
    assert rec["title"] == "Raw" and rec["tags"] == ["csv", "site=n"]
    assert rec["metadata"] == {"rows": 2, "unit": "m"}
    rec = pd_json("meta", "set", "loc:d/raw.csv", "--meta", "unit=", "--no-tags")
    assert rec["metadata"] == {"rows": 2} and rec["tags"] == []
    assert pd_json("meta", "get", "loc:d/raw.csv")["title"] == "Raw"
    human = pd("meta", "get", "loc:d/raw.csv")
    assert human.returncode == 0 and "title: Raw" in human.stdout and "metadata.rows: 2" in human.stdout

    bad = pd("meta", "set", "loc:d/raw.csv", "--alias", "not ok")
    assert bad.returncode == 1 and '"field": "alias"' in bad.stderr and "Traceback" not in bad.stderr
    assert pd("meta", "set", "loc:d/raw.csv").returncode == 2, "nothing to set is a usage error"

    edge = pd_json("link", "loc:d/out.csv", "loc:d/raw.csv", "--type", "analysis_of",
                   "--mode", "non_destructive", "--qualifier", "tool=pycroscopy")
    assert edge["created"] and edge["qualifiers"] == {"tool": "pycroscopy"}
    pd_json("link", "loc:d/raw.csv", "loc:d/out.csv", "--type", "cites")
    text = pd("lineage", "loc:d/out.csv", "--depth", "4").stdout
    assert "analysis_of [non_destructive]" in text and "(cycle)" in text
    rows = pd_json("links", "loc:d/raw.csv", "--direction", "in")["relationships"]
    assert [e["type"] for e in rows] == ["analysis_of"]
    refused = pd("link", "loc:d/out.csv", "loc:d/raw.csv", "--type", "x", "--time", "soon")
    assert refused.returncode == 1 and "qualifier_time" in refused.stderr

    status = pd_json("auth")
    assert [(r["remote"], r["ok"], r["can_write"]) for r in status] == [("loc", True, True)]
    assert pd("auth", "nope").returncode == 1


def test_push_record(remote: str, tmp_path: Path) -> None:
    with PipeClient() as c:
        c.update_profile_config({"filerepo": str(tmp_path / "repo")})
        c.upsert_pipe({"name": "p", "remote": "loc", "options": {"dir": "pp"}})
        folder = c.pipe("p").dirpath
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "new.csv").write_text("1\n")
    out = pd_json("push", "--pipe", "p", "--record")
    assert out["summary"]["linked"] == 1
    rows = pd_json("links", "loc:pp/new.csv", "--direction", "out")["relationships"]
    assert [e["to_ref"] for e in rows] == ["pipe:p/new.csv"]
