"""The sharing tests' world: real users, a service account, one shared daemon per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers.s3 import FAKE_SECRET, S3Server, new_bucket_name, spec_for
from tests.sharing.helpers import SETUP_REMOTE, World, drop_world, make_world, start_shared


@pytest.fixture(scope="module")
def world(s3_server: S3Server, s3_client: Any) -> Iterator[World]:
    w = make_world()
    bucket = new_bucket_name("pdsh")
    s3_client.create_bucket(Bucket=bucket)
    w.bucket = bucket  # type: ignore[attr-defined]
    w.s3 = s3_client  # type: ignore[attr-defined]
    try:
        start_shared(w)
        spec = spec_for(s3_server, bucket)
        w.ok("alice", SETUP_REMOTE, {"name": "lake", "protocol": "s3", "options": spec["options"],
                                     "credentials": spec["credentials"]})
        yield w
    finally:
        leaks = drop_world(w)
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                s3_client.delete_object(Bucket=bucket, Key=o["Key"])
        s3_client.delete_bucket(Bucket=bucket)
    received = "".join(w.outputs)
    assert FAKE_SECRET not in received, "a user received a credential"
    assert not leaks, leaks
