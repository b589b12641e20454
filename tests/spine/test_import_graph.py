"""tools/check_imports.py: the repository's import graph has no cycle and keeps its layers, and
the check does catch a cycle and a broken layer (tiny packages built in tmp_path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "check_imports.py"


def run(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True,
                          timeout=60)


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in {"pipedaemon/__init__.py": "", "pipedaemon_sdk/__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_repository_passes() -> None:
    out = run(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no import cycle" in out.stdout


def test_a_cycle_is_named_with_its_imports(tmp_path: Path) -> None:
    root = tree(tmp_path, {"pipedaemon/a.py": "from . import b\n",
                           "pipedaemon/b.py": "import os\n\nfrom .c import thing\n",
                           "pipedaemon/c.py": "from pipedaemon.a import x\nthing = 1\n"})
    out = run(root)
    assert out.returncode == 1
    assert "import cycle: pipedaemon.a -> pipedaemon.b -> pipedaemon.c -> pipedaemon.a" in out.stdout
    assert "pipedaemon.c imports pipedaemon.a  (pipedaemon/c.py:1)" in out.stdout


def test_imports_in_functions_and_for_type_checking_are_no_cycle(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "pipedaemon/a.py": "from . import b\n",
        "pipedaemon/b.py": ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                            "    from .a import T\n\n\ndef f() -> None:\n    from . import a\n")})
    out = run(root)
    assert out.returncode == 0, out.stdout


def test_a_module_level_import_in_a_try_block_counts(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "pipedaemon/a.py": "try:\n    from . import b\nexcept ImportError:\n    b = None\n",
        "pipedaemon/b.py": "class K:\n    from . import a\n"})
    out = run(root)
    assert out.returncode == 1
    assert "import cycle: pipedaemon.a -> pipedaemon.b -> pipedaemon.a" in out.stdout


def test_broken_layers_are_named(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "pipedaemon/jobs.py": "",
        "pipedaemon/server.py": "",
        "pipedaemon/transfer/__init__.py": "",
        "pipedaemon/transfer/upload.py": "def f() -> None:\n    from ..jobs import JobContext\n",
        "pipedaemon/cli/__init__.py": "from pipedaemon import server\n",
        "pipedaemon_sdk/errors.py": "from . import client\n",
        "pipedaemon_sdk/client.py": "",
    })
    out = run(root)
    assert out.returncode == 1
    assert ("layer broken (the engine (transfer/) depends only on backends.base, hashing, retry, window, "
            "state): pipedaemon.transfer.upload imports pipedaemon.jobs  (pipedaemon/transfer/upload.py:2)"
            in out.stdout)
    assert ("layer broken (the CLI stands on the SDK only): pipedaemon.cli imports pipedaemon.server"
            in out.stdout)
    assert ("layer broken (the SDK's protocol modules import nothing of the project): "
            "pipedaemon_sdk.errors imports pipedaemon_sdk.client") in out.stdout
    assert "3 problem(s)" in out.stdout
