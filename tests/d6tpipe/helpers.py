"""Helpers for the d6tpipe tests: the real d6tpipe 1.2.7 (never reaching the network), d6tpipe-style
settings for each test server, and direct access to the files around both libraries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLOSED_PORT = "http://127.0.0.1:9"  # d6tcollect's usage reports go here: nothing listens (discard)


def s3_settings(name: str, server: Any, bucket: str, folder: str = "") -> dict[str, Any]:
    """A self-hosted S3 pipe as d6tpipe's docs write it (plus the moto endpoint)."""
    return {"name": name, "protocol": "s3", "location": bucket,
            "options": {"remotepath": f"s3://{bucket}/{folder}", "endpoint_url": server.endpoint_url,
                        "region": server.region},
            "credentials": {"aws_access_key_id": server.aws_access_key_id,
                            "aws_secret_access_key": server.aws_secret_access_key}}


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative name, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
