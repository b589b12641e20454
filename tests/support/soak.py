"""Switches shared by the suites that have a long form (``make soak``, bench/soak.py).

``PIPEDAEMON_SOAK=1`` makes them run it; each then appends its figures as one JSON line
to the file ``PIPEDAEMON_SOAK_REPORT`` names, which bench/soak.py sums up into
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from typing import Any

SOAK = os.environ.get("PIPEDAEMON_SOAK", "") not in ("", "0")


def report(row: dict[str, Any]) -> None:
    """Append ``row`` (with its ``suite``) to the soak's report, when one is being written."""
    path = os.environ.get("PIPEDAEMON_SOAK_REPORT")
    if path:
        with open(path, "a") as f:  # one short write per line: xdist workers may append at once
            f.write(json.dumps(row) + "\n")
