"""Seeded faults between the daemon and S3, SFTP and FTP during mixed pulls and pushes.

The short form (``make test``) runs a few seeds per protocol; the soak
(``PIPEDAEMON_SOAK=1``, ``make soak``) runs 200. See tests/reliability/fault_campaign.py for what
a round does and how it is judged, and docs/reliability.md for the figures.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import pytest

from pipedaemon_sdk import ChecksumMismatchError, PipeClient
from tests.reliability.fault_campaign import MiB, Round, Tally, proxied, server_for
from tests.support.faultproxy import FaultProxy
from tests.support.soak import SOAK
from tests.support.storage import register


def _seeds() -> range:
    """3 seeds, 200 in the soak; PIPEDAEMON_CAMPAIGN_SEEDS=a:b picks others (to replay one)."""
    given = os.environ.get("PIPEDAEMON_CAMPAIGN_SEEDS")
    if given:
        a, _, b = given.partition(":")
        return range(int(a), int(b or int(a) + 1))
    return range(200) if SOAK else range(3)


SEEDS = _seeds()


@pytest.mark.timeout(0 if SOAK else 300)
# One server per protocol behind the TCP proxy (local has no wire; ftps's TLS hides the PASV it rewrites).
@pytest.mark.parametrize("protocol, transport", [("s3", None), ("sftp", "openssh"), ("sftp", "asyncssh"),
                                                 ("ftp", None)])
def test_fault_campaign(protocol: str, transport: str | None, request: pytest.FixtureRequest,
                        client: PipeClient) -> None:
    spec, storage, port = server_for(request, protocol)
    tally = Tally(protocol, transport)
    with FaultProxy(port, ftp_data=protocol == "ftp") as proxy:
        register(client, proxied(spec, proxy), "r", **({"transport": transport} if transport else {}))
        for seed in SEEDS:
            try:
                Round(client, proxy, storage, seed, tally).run()
            except AssertionError as exc:
                if not SOAK:
                    raise
                tally.violations.append(f"seed {seed}: {exc}")  # the soak counts them all, then fails
    tally.record()
    print(f"\n{protocol}: {tally}")
    assert tally.violations == []
    assert tally.runs == len(SEEDS) and sum(tally.outcomes.values()) == 2 * len(SEEDS)


@pytest.mark.parametrize("part_mb", [8, 6])
def test_damaged_multipart_download_never_passes(part_mb: int, s3_spec: dict[str, Any], s3_client: Any,
                                                 client: PipeClient, tmp_path: Path) -> None:
    """A multipart object's copy is checked against its ETag with the real part size: 8 MiB (a
    usual size) and 6 MiB (not one the daemon guesses; the storage tells it). Damaged on every
    connection, the download fails with 1009 and leaves nothing; undamaged, it arrives whole."""
    from boto3.s3.transfer import TransferConfig

    data = random.Random(part_mb).randbytes(20 * MiB + 123)
    bucket = s3_spec["root"].rstrip("/")
    cfg = TransferConfig(multipart_threshold=part_mb * MiB, multipart_chunksize=part_mb * MiB)
    s3_client.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=cfg)
    parts = -(-len(data) // (part_mb * MiB))
    assert s3_client.head_object(Bucket=bucket, Key="big.bin")["ETag"].endswith(f'-{parts}"')
    port = int(s3_spec["options"]["endpoint_url"].rsplit(":", 1)[1])
    with FaultProxy(port, lambda n: ("corrupt_every", MiB)) as proxy:
        register(client, {**s3_spec, "options": {**s3_spec["options"],
                                                      "endpoint_url": f"http://127.0.0.1:{proxy.port}"}}, "r")
        with pytest.raises(ChecksumMismatchError):
            client.download(remote="r", key="big.bin", dest=f"{tmp_path}/bad/")
        assert proxy.fired
        proxy.set_schedule(lambda n: ("pass",))
        got = client.download(remote="r", key="big.bin", dest=f"{tmp_path}/good/")
    assert list((tmp_path / "bad").iterdir()) == []
    assert Path(got.files[0].local_path).read_bytes() == data
