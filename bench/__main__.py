"""`python -m bench NAME [ARGS]` runs bench/NAME.py's main(ARGS); without NAME, every benchmark."""

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
        print(f"usage: python -m bench [NAME [ARGS]]   NAME: {', '.join(benchmarks())}")
        return 0
    names = argv[:1] or benchmarks()
    status = 0
    for name in names:
        if name not in benchmarks():
            print(f"unknown benchmark {name!r}: choose from {', '.join(benchmarks())}", file=sys.stderr)
            return 2
        module = importlib.import_module(f"bench.{name}")
        status |= int(module.main(argv[1:]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
