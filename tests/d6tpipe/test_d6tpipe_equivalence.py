"""The same d6tpipe script under the real d6tpipe 1.2.7 (its local mode) and under
pipedaemon_sdk.d6tpipe, against the moto S3 server: the same return values from upsert_pipe,
list_pipes, scan_remote, pull_preview, pull, files, is_synced, scan_local, push_preview, push and
remove_orphans, and the same files on disk and in the bucket afterwards.

The script keeps to what d6tpipe 1.2.7 does right; where it has bugs (mode 'mod', its conflict
check, files() after an empty pull) tests/d6tpipe/test_d6tpipe_docs.py checks our documented behaviour.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pipedaemon_sdk.d6tpipe as ours
from tests.d6tpipe.helpers import s3_settings, tree
from tests.servers.s3 import new_bucket_name

SEED = {"a.csv": b"a,1\n", "b.csv": b"b,22\n", "README.md": b"# Vendor data\n", "sub/c.csv": b"c,333\n"}


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def script(d6tpipe: Any, base: Path, settings: dict[str, Any], s3: Any, bucket: str) -> dict[str, Any]:
    """A d6tpipe user's session; what each call returned."""
    out: dict[str, Any] = {}
    cfg = str(base / "cfg.json")
    d6tpipe.api.ConfigManager(filecfg=cfg).init({"filerepo": str(base / "repo")})
    api = d6tpipe.api.APILocal(filecfg=cfg)
    out["upsert_new"] = d6tpipe.upsert_pipe(api, settings)[0].status_code
    out["upsert_again"] = d6tpipe.upsert_pipe(api, settings)[0].status_code
    out["list_pipes"] = api.list_pipes()
    pipe = d6tpipe.Pipe(api, settings["name"])
    out["dir"] = pipe.dir == str(Path(api.filerepo) / settings["name"]) + "/"
    out["remote_prefix"] = pipe.remote_prefix
    out["scan_remote"] = pipe.scan_remote()
    response, rows = pipe.scan_remote(attributes=True)
    out["scan_remote_attr"] = (response, [(r["filename"], r["size"], r["crc"],
                                           type(r["modified_at"]).__name__, str(r["modified_at"])[-6:])
                                          for r in rows])
    out["pull_preview"] = sorted(pipe.pull_preview())
    out["pull"] = sorted(pipe.pull())
    out["files"] = sorted(pipe.files())
    out["filepaths"] = [p.relative_to(pipe.dirpath).as_posix() for p in pipe.filepaths(include="*.csv")]
    out["is_synced"] = pipe.is_synced()
    out["scan_local"] = pipe.scan_local()
    rows, names = pipe.scan_local(attributes=True)
    out["scan_local_attr"] = ([(r["filename"], r["size"], r["crc"], type(r["modified_at"]).__name__)
                               for r in rows], sorted(names))

    (pipe.dirpath / "new.csv").write_bytes(b"n,4444\n")
    out["push_preview"] = sorted(pipe.push_preview())
    out["push"] = sorted(pipe.push())
    out["synced_after_push"] = pipe.is_synced()

    s3.put_object(Bucket=bucket, Key="a.csv", Body=b"a,1\na,2\n")  # someone else changes the remote
    s3.put_object(Bucket=bucket, Key="d.csv", Body=b"d,55555\n")
    out["pull_preview_fresh"] = sorted(pipe.pull_preview(cached=False))
    out["synced_changed"] = pipe.is_synced()
    out["pull_changed"] = sorted(pipe.pull())
    out["pull_nothing"] = pipe.pull()

    (pipe.dirpath / "orphan.csv").write_bytes(b"o\n")
    s3.put_object(Bucket=bucket, Key="gone.csv", Body=b"g\n")
    pipe.scan_remote(cached=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["orphans_default"] = pipe.remove_orphans()
    out["orphans_warned"] = any("dryrun" in str(w.message) for w in caught)
    out["orphans_both_dry"] = pipe.remove_orphans(direction="both", dryrun=True)
    out["orphans_both"] = pipe.remove_orphans(direction="both", dryrun=False)
    out["bucket"] = keys(s3, bucket)
    out["disk"] = tree(pipe.dirpath)
    return out


Script = Callable[[Any, Path, dict[str, Any], Any, str], dict[str, Any]]
Results = dict[str, dict[str, Any]]


def run_both(fn: Script, name: str, real_d6tpipe: Any, s3_server: Any, s3_client: Any, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Results:
    """``fn`` under the real d6tpipe and under ours, each on its own bucket holding SEED."""
    # The real library's boto3 finds moto through the environment (its settings have no endpoint).
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    results = {}
    for label, mod in (("real", real_d6tpipe), ("ours", ours)):
        bucket = new_bucket_name("d6t")
        s3_client.create_bucket(Bucket=bucket)
        for key, body in SEED.items():
            s3_client.put_object(Bucket=bucket, Key=key, Body=body)
        out = fn(mod, tmp_path / label, s3_settings(name, s3_server, bucket), s3_client, bucket)
        out = {k: v.replace(bucket, "BUCKET") if isinstance(v, str) else v for k, v in out.items()}
        # what they print: the sizes moved and the README, line for line
        printed = capsys.readouterr().out.splitlines()
        out["printed"] = [ln for ln in printed if ln.startswith(("pulling:", "pushing:", "####", "# "))]
        results[label] = out
    return results


@pytest.mark.timeout(240)
def test_same_script_same_results(real_d6tpipe: Any, client: Any, s3_server: Any, s3_client: Any,
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    results = run_both(script, "eq-pipe", real_d6tpipe, s3_server, s3_client, tmp_path, monkeypatch, capsys)
    real, mine = results["real"], results["ours"]
    assert mine == real
    # and what they both returned is what d6tpipe documents
    assert real["pull"] == ["README.md", "a.csv", "b.csv", "sub/c.csv"]
    assert real["push"] == ["new.csv"]
    assert real["pull_changed"] == ["a.csv", "d.csv"]
    assert real["pull_nothing"] == []
    assert real["orphans_default"] == {"local": ["orphan.csv"], "remote": []}
    assert real["orphans_both"] == {"local": ["orphan.csv"], "remote": ["gone.csv"]}
    assert "gone.csv" not in real["bucket"] and "orphan.csv" not in real["disk"]
    assert real["disk"]["a.csv"] == b"a,1\na,2\n"
    assert real["printed"][:4] == ["pulling: 0.00MB", "pulling: 0.00MB",
                                   "############### README ###############", "# Vendor data"]


def bug_script(d6tpipe: Any, base: Path, settings: dict[str, Any], s3: Any, bucket: str) -> dict[str, Any]:
    """Where d6tpipe 1.2.7 has bugs: mode 'mod', its conflict check, remove_orphans('local')."""
    out: dict[str, Any] = {}
    cfg = str(base / "cfg.json")
    d6tpipe.api.ConfigManager(filecfg=cfg).init({"filerepo": str(base / "repo")})
    api = d6tpipe.api.APILocal(filecfg=cfg)
    d6tpipe.upsert_pipe(api, settings)
    pipe = d6tpipe.Pipe(api, settings["name"])
    pipe.pull()
    s3.put_object(Bucket=bucket, Key="a.csv", Body=b"remote edit\n")
    pipe.scan_remote(cached=False)
    try:
        out["mod"] = d6tpipe.Pipe(api, settings["name"], mode="mod").pull_preview()
    except ValueError as err:
        out["mod"] = f"ValueError: {err}"
    (pipe.dirpath / "a.csv").write_bytes(b"local edit, not pushed\n")
    try:
        out["conflict"] = pipe.pull()
    except d6tpipe.exceptions.PullError:
        out["conflict"] = "PullError"
    out["a.csv"] = (pipe.dirpath / "a.csv").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["orphans"] = pipe.remove_orphans("local")
    return out


@pytest.mark.timeout(120)
def test_where_d6tpipe_has_bugs_the_documented_thing_happens(real_d6tpipe: Any, client: Any, s3_server: Any,
                                                              s3_client: Any, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """docs/d6tpipe.md, 'What is better': each claim about d6tpipe 1.2.7, shown on the real one."""
    results = run_both(bug_script, "bug-pipe", real_d6tpipe, s3_server, s3_client, tmp_path, monkeypatch,
                       capsys)
    real, mine = results["real"], results["ours"]
    assert real["mod"] == "ValueError: Invalid pipe mode" and mine["mod"] == ["a.csv"]
    assert real["conflict"] == ["a.csv"] and real["a.csv"] == b"remote edit\n"  # the local edit was lost
    assert mine["conflict"] == "PullError" and mine["a.csv"] == b"local edit, not pushed\n"
    assert real["orphans"] == {"local": "local", "remote": "local"}  # 'local' taken as the files
    assert mine["orphans"] == {"local": [], "remote": []}


@pytest.mark.timeout(120)
def test_files_d6tpipe_pulled_are_kept(real_d6tpipe: Any, client: Any, s3_server: Any, s3_client: Any,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/d6tpipe.md, 'Keeping the files d6tpipe pulled': pointed at d6tpipe's folder, the
    port downloads nothing that d6tpipe already pulled (S3: md5 = ETag) and pulls what changed."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    bucket = new_bucket_name("d6k")
    s3_client.create_bucket(Bucket=bucket)
    for key, body in SEED.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    settings = s3_settings("kept-pipe", s3_server, bucket)
    before = real_d6tpipe.api.ConfigManager(filecfg=str(tmp_path / "real.json"))
    before.init({"filerepo": str(tmp_path / "d6t")})
    old_api = real_d6tpipe.api.APILocal(filecfg=str(tmp_path / "real.json"))
    real_d6tpipe.upsert_pipe(old_api, settings)
    assert sorted(real_d6tpipe.Pipe(old_api, "kept-pipe").pull()) == sorted(SEED)

    ours.api.ConfigManager(filecfg=str(tmp_path / "ours.json")).init({"filerepo": str(tmp_path / "d6t")})
    api = ours.api.APILocal(filecfg=str(tmp_path / "ours.json"))
    assert api.filerepo == old_api.filerepo
    ours.upsert_pipe(api, settings)
    pipe = ours.Pipe(api, "kept-pipe")
    mtimes = {n: (pipe.dirpath / n).stat().st_mtime_ns for n in SEED}
    assert pipe.pull() == []  # every file recorded as synced, none downloaded again
    assert {n: (pipe.dirpath / n).stat().st_mtime_ns for n in SEED} == mtimes
    assert sorted(pipe.files()) == sorted(SEED)
    s3_client.put_object(Bucket=bucket, Key="b.csv", Body=b"b,22\nb,23\n")
    assert pipe.pull_preview(cached=False) == ["b.csv"]
    assert pipe.pull() == ["b.csv"]
    assert tree(pipe.dirpath)["b.csv"] == b"b,22\nb,23\n"
