"""`python -m bench [NAME ...] [ARGS]` runs each bench/NAME.py's main(ARGS); without NAME, every benchmark."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HELPERS = {"__init__", "__main__", "servers", "tools"}


def benchmarks() -> list[str]:
    """Modules of this folder that define main(), helpers excluded."""
    names = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.stem not in HELPERS and "def main(" in path.read_text():
            names.append(path.stem)
    return names


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench [NAME ...] [ARGS]   NAME: {', '.join(benchmarks())}")
        return 0
    known = benchmarks()
    names = []
    while argv and not argv[0].startswith("-"):  # leading names: `python -m bench rpc sync`
        if argv[0] not in known:
            print(f"unknown benchmark {argv[0]!r}: choose from {', '.join(known)}", file=sys.stderr)
            return 2
        names.append(argv.pop(0))
    status = 0
    for name in names or known:
        module = importlib.import_module(f"bench.{name}")
        status |= int(module.main(list(argv)) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
