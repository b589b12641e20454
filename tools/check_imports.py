"""The import graph of pipedaemon/ and pipedaemon_sdk/: no cycles, and the layers kept.

Run ``python tools/check_imports.py [ROOT]`` (ROOT holds the packages; the default is the
checkout this file is in). It reads the sources with ``ast`` (nothing is imported) and exits
1 naming every cycle and every import that breaks a layer, 0 when there is none.

What counts as an import, from module M:
- ``import a.b.c`` is an edge M -> a.b.c; ``from a.b import c`` an edge M -> a.b.c when that is
  a module of the project, else M -> a.b (a name inside it); relative imports are resolved
  against M's package (``from . import x`` in package p: p.x).
- The packages above the imported module (a, a.b for a.b.c) are not edges: Python runs their
  ``__init__`` first, but a package importing its own submodules is no cycle to untangle.
- Imports outside the standard library and the project are ignored.

Cycles are looked for among module-level imports only: the ones that run when the module is
imported, including those in ``try``/``if`` blocks and class bodies at module level. An import
inside a function, or under ``if TYPE_CHECKING:``, runs later or never and does not count for
cycles.

The layers are contracts on every import (module-level, inside functions and under
``TYPE_CHECKING`` alike: a type is a dependency too); see CONTRACTS below, bottom up:
the SDK's protocol modules (errors, wire) import nothing of the project; backends stand on
them and a few pure helpers, below the engine; the engine (``transfer/``) depends only on
``backends.base``, ``hashing``, ``retry``, ``window`` and ``state``, below jobs and RPC; the SDK
never imports the daemon; the CLI (``pipedaemon/cli/``) stands on the SDK, never on the
daemon's internals (save the listed entry points that start the daemon itself).
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

PACKAGES = ("pipedaemon", "pipedaemon_sdk")

# The SDK's protocol: what both sides of the socket share. They import nothing of the project.
PROTOCOL = ("pipedaemon_sdk.errors", "pipedaemon_sdk.wire", "pipedaemon_sdk.protocol",
            "pipedaemon_sdk.protocol.*", "pipedaemon_sdk._protocol")
# Pure helpers below the backends and the engine (no daemon, no job, no RPC).
HELPERS = ("pipedaemon.retry", "pipedaemon.window", "pipedaemon.hashing")


@dataclass(frozen=True)
class Contract:
    """Modules matching ``members`` may import only modules matching ``allowed``
    (patterns as fnmatch: ``pipedaemon.transfer*`` is the package and what is in it)."""

    name: str
    members: tuple[str, ...]
    allowed: tuple[str, ...]
    # (importer, imported) pairs let through, each with its reason.
    exceptions: dict[tuple[str, str], str] = field(default_factory=dict)


CONTRACTS = (
    Contract("the SDK's protocol modules import nothing of the project", PROTOCOL, PROTOCOL),
    Contract("the SDK never imports the daemon", ("pipedaemon_sdk", "pipedaemon_sdk.*"),
             ("pipedaemon_sdk", "pipedaemon_sdk.*")),
    Contract("backends stand below the engine, on the protocol and pure helpers",
             ("pipedaemon.backends*",),
             (*PROTOCOL, "pipedaemon.backends*", *HELPERS,
              # The pipedaemon backend talks to another daemon as a client does.
              "pipedaemon_sdk", "pipedaemon_sdk.client", "pipedaemon_sdk.streams")),
    Contract("the engine (transfer/) depends only on backends.base, hashing, retry, window, state",
             ("pipedaemon.transfer*",),
             (*PROTOCOL, "pipedaemon.transfer*", "pipedaemon.backends.base", *HELPERS, "pipedaemon.state")),
    Contract("pure helpers stay below the engine", HELPERS,
             (*PROTOCOL, *HELPERS, "pipedaemon.backends.base")),
    Contract("the CLI stands on the SDK only", ("pipedaemon.cli*",),
             ("pipedaemon_sdk", "pipedaemon_sdk.*", "pipedaemon.cli*", "pipedaemon"),
             {("pipedaemon.cli.daemon_cmds", "pipedaemon.server"): "`pipedaemon serve` runs the daemon",
              ("pipedaemon.cli.daemon_cmds", "pipedaemon.startup"): "`serve` checks the home first",
              ("pipedaemon.cli.daemon_cmds", "pipedaemon.log"): "`serve` sets up the daemon's log",
              ("pipedaemon.cli.daemon_cmds", "pipedaemon.access"): "`serve --shared` options",
              ("pipedaemon.cli.daemon_cmds", "pipedaemon.systemd"): "`install-service` writes the units",
              ("pipedaemon.cli.storage_cmds", "pipedaemon.settings"):
                  "`remote add` converts option values to the types of the settings schemas"}),
)


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    module_level: bool  # runs when the importer is imported (counts for cycles)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            out[module_name(root, path)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(body: Iterable[ast.stmt], module_level: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement with whether it runs at import time."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, module_level
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(node.body, False)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, False)
            yield from _walk(node.orelse, module_level)
        elif isinstance(node, ast.stmt):  # a compound statement: class, try, if, with, for, match
            blocks: list[ast.stmt] = []
            for name in ("body", "orelse", "finalbody"):
                blocks.extend(getattr(node, name, None) or [])
            for sub in (getattr(node, "handlers", None) or []) + (getattr(node, "cases", None) or []):
                blocks.extend(sub.body)
            yield from _walk(blocks, module_level)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Import] = []
    for node, module_level in _walk(tree.body, True):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            assert isinstance(node, ast.ImportFrom)
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in dict.fromkeys(targets):
            if target in modules and target != name:
                out.append(Import(name, target, node.lineno, module_level))
    return out


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (a few hundred)
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                comps.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_one_cycle(sorted(c), edges) for c in comps]


def _one_cycle(comp: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the component's first module back to itself (breadth first)."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return [start, start]


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def check(root: Path) -> list[str]:
    """Every problem found, one message each (empty: the graph is clean)."""
    modules = find_modules(root)
    found = [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    where: dict[tuple[str, str], Import] = {}
    for imp in found:
        if imp.module_level:
            edges.setdefault(imp.importer, set()).add(imp.target)
            where.setdefault((imp.importer, imp.target), imp)
    for cycle in find_cycles(edges):
        steps = []
        for a, b in itertools.pairwise(cycle):
            imp = where[(a, b)]
            steps.append(f"    {a} imports {b}  ({modules[a].relative_to(root)}:{imp.line})")
        problems.append("import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(steps)
                        + "\n  (move the import into the function that needs it, or move the shared"
                          " code down a layer)")
    for contract in CONTRACTS:
        for imp in found:
            if not matches(imp.importer, contract.members) or matches(imp.target, contract.allowed):
                continue
            if (imp.importer, imp.target) in contract.exceptions:
                continue
            problems.append(f"layer broken ({contract.name}): {imp.importer} imports {imp.target}  "
                            f"({modules[imp.importer].relative_to(root)}:{imp.line})")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"check_imports: {len(problems)} problem(s) in the import graph of {', '.join(PACKAGES)}")
        return 1
    print(f"check_imports: no import cycle, layers kept ({len(find_modules(root))} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
