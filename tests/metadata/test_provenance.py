"""Provenance links between object versions: validation as the reference documents it, a small
graph with a cycle, overwrites that do not re-point history, pull/push(record=True), and links
and metadata surviving a restart and kill -9."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import AlreadyExistsError, ConflictError, InvalidSettingsError, NotFoundError, PipeClient
from tests.servers.s3 import S3Server, _server, new_bucket_name, spec_for
from tests.support.crash import final_state, integrity, wait_running_progress
from tests.support.pipes import restart
from tests.support.spine import kill9
from tests.support.storage import REMOTE, register

MODES = ("non_destructive", "altering", "destructive", "in_situ", "ex_situ", "invasive", "non_invasive")


def _objects(c: PipeClient, spec: dict[str, Any], tmp_path: Path, names: str = "abcd") -> None:
    register(c, spec)
    for n in names:
        f = tmp_path / n
        f.write_text(f"{n}\n")
        c.upload(f, remote=REMOTE, key=f"g/{n}")


def ref(n: str) -> str:
    return f"{REMOTE}:g/{n}"


def _field(fn: Any) -> str:
    with pytest.raises(InvalidSettingsError) as info:
        fn()
    return info.value.data["field"]


def test_graph_with_cycle(client: PipeClient, local_spec: dict[str, Any], tmp_path: Path) -> None:
    _objects(client, local_spec, tmp_path)
    ab = client.create_relationship(ref("a"), ref("b"), "derived_from", analysis_mode="non_destructive",
                                    qualifiers={"tool": "pycroscopy"}, qualifier_note="first pass",
                                    qualifier_time="2026-12-03T07:00:00Z")
    assert ab["created"] and ab["type"] == "derived_from" and ab["qualifiers"] == {"tool": "pycroscopy"}
    assert ab["from"].startswith(ref("a") + "@stat:2:") and ab["from_identity"]["size"] == 2
    again = client.create_relationship(ref("a"), ref("b"), relationship_type="derived_from",
                                       analysis_mode="non_destructive", qualifiers={"tool": "pycroscopy"},
                                       qualifier_note="first pass", qualifier_time="2026-12-03T07:00:00Z")
    assert not again["created"] and again["id"] == ab["id"], "the same link is recorded once"
    with pytest.raises(AlreadyExistsError) as info:  # the same link, told differently: not changed
        client.create_relationship(ref("a"), ref("b"), "derived_from", analysis_mode="destructive")
    assert info.value.data["id"] == ab["id"]
    client.create_relationship(ref("b"), ref("c"), "analysis_of")
    client.create_relationship(ref("c"), ref("a"), "calibrated_with")  # closes a cycle a -> b -> c -> a
    client.create_relationship(ref("c"), ref("d"), "acquired_with")

    full = client.lineage(ref("a"), depth=10)
    assert [n["ref"] for n in full["nodes"]] == [ref("a"), ref("b"), ref("c"), ref("d")]
    assert [n["depth"] for n in full["nodes"]] == [0, 1, 2, 3]
    assert len(full["edges"]) == 4 and full["cycles"] == 3 and not full["truncated"]
    on_cycle = {e["type"] for e in full["edges"] if e["cycle"]}
    assert on_cycle == {"derived_from", "analysis_of", "calibrated_with"}

    one = client.lineage(ref("a"), depth=1)
    assert [n["ref"] for n in one["nodes"]] == [ref("a"), ref("b")] and one["truncated"]
    zero = client.lineage(ref("a"), depth=0)
    assert len(zero["nodes"]) == 1 and zero["edges"] == [] and zero["truncated"]
    down = client.lineage(ref("d"), depth=5, direction="in")
    assert {n["ref"] for n in down["nodes"]} == {ref(x) for x in "abcd"}

    rels = client.relationships(ref("c"))
    assert {e["type"] for e in rels["relationships"]} == {"analysis_of", "calibrated_with", "acquired_with"}
    into = client.relationships(ref("c"), direction="in")["relationships"]
    assert [e["type"] for e in into] == ["analysis_of"]
    assert client.relationships(ref("d"), direction="out")["relationships"] == []


def test_validation(client: PipeClient, local_spec: dict[str, Any], tmp_path: Path) -> None:
    _objects(client, local_spec, tmp_path, "ab")
    link = lambda **kw: client.create_relationship(ref("a"), ref("b"), **kw)  # noqa: E731
    assert _field(lambda: link()) == "rel_type"
    assert _field(lambda: link(rel_type=" ")) == "rel_type"
    assert _field(lambda: link(rel_type="x", relationship_type="y")) == "relationship_type"
    for n in (254, 255):
        link(rel_type="r" * n)
    assert _field(lambda: link(rel_type="r" * 256)) == "rel_type"
    assert _field(lambda: link(relationship_type="r" * 256)) == "relationship_type"
    for mode in MODES:
        assert link(rel_type=f"m-{mode}", analysis_mode=mode)["analysis_mode"] == mode
    assert _field(lambda: link(rel_type="m", analysis_mode="gentle")) == "analysis_mode"
    assert _field(lambda: link(rel_type="t", qualifier_time="yesterday")) == "qualifier_time"
    for n in (4095, 4096):
        link(rel_type=f"n{n}", qualifier_note="n" * n)
    assert _field(lambda: link(rel_type="n", qualifier_note="n" * 4097)) == "qualifier_note"
    for n in (16383, 16384):  # {"x":"..."} is 8 bytes around the value
        link(rel_type=f"q{n}", qualifiers={"x": "v" * (n - 8)})
    assert _field(lambda: link(rel_type="q", qualifiers={"x": "v" * (16385 - 8)})) == "qualifiers"
    assert _field(lambda: client.create_relationship(ref("a"), ref("a"), "self")) == "to_ref"
    assert _field(lambda: client.create_relationship("no-colon", ref("a"), "x")) == "from_ref"
    assert _field(lambda: client.create_relationship(ref("a"), f"{REMOTE}:../x", "x")) == "to_ref"
    with pytest.raises(NotFoundError):
        client.create_relationship(ref("a"), f"{REMOTE}:g/nothing", "x")
    for n in (63, 64):
        client.lineage(ref("a"), depth=n)
    assert _field(lambda: client.lineage(ref("a"), depth=65)) == "depth"
    assert _field(lambda: client.lineage(ref("a"), depth=-1)) == "depth"


def test_overwrite_does_not_repoint(client: PipeClient, local_spec: dict[str, Any], tmp_path: Path) -> None:
    _objects(client, local_spec, tmp_path, "ab")
    old = client.create_relationship(ref("a"), ref("b"), "derived_from")
    (tmp_path / "a").write_text("a changed\n")
    client.upload(tmp_path / "a", remote=REMOTE, key="g/a")
    now = client.relationships(ref("a"))
    assert now["relationships"] == [] and [e["id"] for e in now["other_versions"]] == [old["id"]]
    assert now["version"] != old["from_version"]
    back = client.lineage(old["from"], depth=2)  # the old version, named explicitly
    assert [n["id"] for n in back["nodes"]] == [old["from"], old["to"]]
    with pytest.raises(ConflictError):  # that version is not the object any more
        client.create_relationship(old["from"], ref("b"), "x")
    assert client.relationships(ref("b"))["relationships"][0]["from"] == old["from"]


def test_record_pull_and_push(client: PipeClient, local_spec: dict[str, Any], s3_spec: dict[str, Any],
                              s3_client: Any, tmp_path: Path) -> None:
    register(client, s3_spec)
    bucket = s3_spec["root"].split("/")[0]
    client.update_profile_config({"filerepo": str(tmp_path / "repo")})
    client.upsert_pipe({"name": "p", "remote": REMOTE, "options": {"dir": "in"}})
    s3_client.put_object(Bucket=bucket, Key="in/raw.csv", Body=b"raw\n")
    etag = s3_client.head_object(Bucket=bucket, Key="in/raw.csv")["ETag"].strip('"')
    pipe = client.pipe("p")
    pulled = pipe.pull(record=True)
    assert pulled.summary["linked"] == 1
    rels = client.relationships("pipe:p/raw.csv", direction="out")["relationships"]
    assert [e["to"] for e in rels] == [f"{REMOTE}:in/raw.csv@etag:{etag}"]
    assert rels[0]["type"] == "derived_from" and rels[0]["qualifiers"]["via"] == "pull"
    (pipe.dirpath / "result.csv").write_text("derived\n")
    pushed = pipe.push(record=True)
    assert pushed.summary["linked"] == 1
    up = client.relationships(f"{REMOTE}:in/result.csv", direction="out")["relationships"]
    assert up[0]["to_ref"] == "pipe:p/result.csv" and up[0]["to_version"].startswith("sha256:")
    pipe.set_metadata("raw.csv", title="raw", tags=["in"])  # a copy onto itself, same ETag
    again = pipe.pull()
    assert list(again) == [] and "linked" not in again.summary, "nothing changed; only asked-for records"
    client.create_relationship("pipe:p/result.csv", "pipe:p/raw.csv", "analysis_of")
    chain = client.lineage(f"{REMOTE}:in/result.csv", depth=5)
    assert [n["ref"] for n in chain["nodes"]] == [f"{REMOTE}:in/result.csv", "pipe:p/result.csv",
                                                  "pipe:p/raw.csv", f"{REMOTE}:in/raw.csv"]


def test_survives_restart_and_kill9(client: PipeClient, local_spec: dict[str, Any], tmp_path: Path,
                                    pd_env: dict[str, Path]) -> None:
    _objects(client, local_spec, tmp_path, "ab")
    client.set_metadata(REMOTE, "g/a", title="kept", tags=["t"], metadata={"n": 1})
    link = client.create_relationship(ref("a"), ref("b"), "derived_from", qualifiers={"k": [1, 2]})
    restart(client)
    assert client.get_metadata(REMOTE, "g/a")["metadata"] == {"n": 1}
    client.set_metadata(REMOTE, "g/b", title="written just before the kill")
    client.create_relationship(ref("b"), ref("a"), "cites")
    kill9(client.status().pid)
    client.close()
    assert integrity(pd_env["home"]) == "ok"
    client.connect()
    assert client.get_metadata(REMOTE, "g/a")["title"] == "kept"
    assert client.get_metadata(REMOTE, "g/b")["title"] == "written just before the kill"
    rels = client.relationships(ref("a"))["relationships"]
    kept = [(e["id"], e["qualifiers"]) for e in rels if e["type"] == "derived_from"]
    assert kept == [(link["id"], {"k": [1, 2]})]
    assert client.lineage(ref("a"), depth=3)["cycles"] == 2


@pytest.fixture(scope="module")
def tiny_parts_s3() -> Iterator[S3Server]:
    """A moto server taking parts of any size: a multipart object of many uneven parts is cheap."""
    with _server("pd-moto-tiny-", {"S3_UPLOAD_PART_MIN_SIZE": "1"}) as server:
        yield server


def test_metadata_copy_that_changes_the_etag_stays_linked(client: PipeClient, tiny_parts_s3: S3Server,
                                                          tmp_path: Path) -> None:
    """65 uneven parts: more than the daemon asks the sizes of, so the metadata copy cannot keep
    the ETag; the new version is linked to the old, whose provenance stays reachable."""
    s3 = tiny_parts_s3.boto3_client()
    bucket = new_bucket_name()
    s3.create_bucket(Bucket=bucket)
    register(client, spec_for(tiny_parts_s3, bucket))
    up = s3.create_multipart_upload(Bucket=bucket, Key="many.bin")["UploadId"]
    parts = []
    for n in range(1, 66):
        body = b"x" * (1 + n % 2)
        resp = s3.upload_part(Bucket=bucket, Key="many.bin", UploadId=up, PartNumber=n, Body=body)
        parts.append({"PartNumber": n, "ETag": resp["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="many.bin", UploadId=up, MultipartUpload={"Parts": parts})
    (tmp_path / "src").write_text("source\n")
    client.upload(tmp_path / "src", remote=REMOTE, key="src")
    old = client.create_relationship(f"{REMOTE}:many.bin", f"{REMOTE}:src", "derived_from")
    rec = client.set_metadata(REMOTE, "many.bin", title="many parts")
    assert rec["object"]["etag"] != old["from_version"].removeprefix("etag:")
    now = client.relationships(f"{REMOTE}:many.bin", direction="out")["relationships"]
    assert [(e["type"], e["to"]) for e in now] == [("same_content_as", old["from"])]
    chain = client.lineage(f"{REMOTE}:many.bin", depth=2)
    assert [n["ref"] for n in chain["nodes"]] == [f"{REMOTE}:many.bin", f"{REMOTE}:many.bin", f"{REMOTE}:src"]
    assert s3.get_object(Bucket=bucket, Key="many.bin")["Body"].read() == b"".join(
        b"x" * (1 + n % 2) for n in range(1, 66))


def test_upload_with_metadata_resumed_after_kill9(client: PipeClient, s3_spec: dict[str, Any], s3_client: Any,
                                                  tmp_path: Path) -> None:
    """Killed mid-upload, the resumed multipart upload still carries the metadata it was created with."""
    register(client, s3_spec)
    bucket = s3_spec["root"].split("/")[0]
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x07" * (17 << 20))  # over the parallel threshold: a multipart upload
    job = client.upload(big, remote=REMOTE, key="big.bin", chunk_size_mb=5, bwlimit_bps=6 << 20, wait=False,
                        title="survives", tags=["k9"], metadata={"n": 1})
    assert wait_running_progress(client, [job.id], 0.3), "the upload ended before it could be killed"
    kill9(client.status().pid)
    client.close()
    assert final_state(job.id) == ("succeeded", None)
    client.connect()
    head = s3_client.head_object(Bucket=bucket, Key="big.bin")
    assert head["Metadata"] == {"title": "survives", "n": "1"} and head["ContentLength"] == 17 << 20
    rec = client.get_metadata(REMOTE, "big.bin")
    assert (rec["title"], rec["tags"], rec["metadata"]) == ("survives", ["k9"], {"n": 1})
