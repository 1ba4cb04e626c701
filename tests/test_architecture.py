"""The layering rules of docs/internals.md, checked by walking every module's imports with `ast`.

- the pure core (`api`, `model`, `translate`, `xds`) imports no I/O: no sockets, threads, subprocesses,
  clocks, files or event loops, and none of the packages that do I/O;
- nothing outside `cli/` imports `cli/`, except click command modules (`*/commands.py`);
- `client/` (the one client of the control plane's APIs, and the state-dir layout) sits below `cli/`,
  `local/`, `agent/` and `server/`: it imports none of them;
- no import cycle between modules, counting every import: one inside a function, and one under
  `if TYPE_CHECKING:` (a type-only cycle is still two modules that know each other: give one a Protocol);
- every module stays under 800 lines.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "mizzen"
PURE = ("api", "model", "translate", "xds", "sdk.rules", "proxyless.bootstrap")  # + single pure modules
# standard-library modules that do I/O or read a clock, and our packages that do
IO_STDLIB = {"socket", "ssl", "subprocess", "threading", "asyncio", "multiprocessing", "concurrent", "select",
             "selectors", "signal", "sqlite3", "http", "urllib", "tempfile", "shutil", "time", "datetime",
             "socketserver", "io", "pathlib", "glob", "logging.handlers"}
IO_THIRD_PARTY = {"grpc", "aiohttp", "requests", "httpx", "redis", "click", "rich"}
IO_OURS = {"server", "agent", "local", "cli", "client", "store", "registry", "bench", "sqlitedb", "manifests",
           "envoybin", "unixpath", "ca", "ratelimit.service", "telemetry.server", "console"}
MAX_LINES = 800


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, typing_only: bool = True) -> list[tuple[str, int]]:
    """(imported module, line) for every import of a module, relative imports resolved; without
    `typing_only`, imports under `if TYPE_CHECKING:` are left out."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not typing_only:
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    stem = base[: len(base) - (child.level - 1)]
                    mod = ".".join(stem + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                out.append((mod, child.lineno))
                for a in child.names:  # `from . import x` may name a submodule
                    if f"{mod}.{a.name}" in MODULES:
                        out.append((f"{mod}.{a.name}", child.lineno))
            visit(child)

    visit(tree)
    return out


IMPORTS = {m: _imports(m, p) for m, p in MODULES.items()}


def _ours(mod: str) -> str | None:
    """The module of ours an import names (the longest known prefix), or None."""
    parts = mod.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in MODULES:
            return cand
        parts.pop()
    return None


def _sub(mod: str) -> str:
    """mizzen.translate.filters.cors -> translate.filters.cors"""
    return mod.split(".", 1)[1] if "." in mod else ""


@pytest.mark.parametrize("layer", PURE)
def test_pure_core_imports_no_io(layer: str) -> None:
    bad = []
    for m, imps in IMPORTS.items():
        if not (m == f"mizzen.{layer}" or m.startswith(f"mizzen.{layer}.")):
            continue
        for mod, line in imps:
            top = mod.split(".")[0]
            if top in IO_STDLIB or mod in IO_STDLIB or top in IO_THIRD_PARTY or \
                    (mod == "os" or mod.startswith("os.")):
                bad.append(f"{MODULES[m].relative_to(SRC)}:{line} imports {mod}")
            elif top == "mizzen":
                sub = _sub(mod)
                if any(sub == o or sub.startswith(o + ".") for o in IO_OURS):
                    bad.append(f"{MODULES[m].relative_to(SRC)}:{line} imports {mod} (does I/O)")
    assert not bad, "the pure core must not do I/O:\n" + "\n".join(bad)


def test_nothing_below_the_cli_imports_it() -> None:
    bad = []
    for m, imps in IMPORTS.items():
        if m == "mizzen.cli" or m.startswith("mizzen.cli.") or MODULES[m].name == "commands.py":
            continue
        for mod, line in imps:
            if mod == "mizzen.cli" or mod.startswith("mizzen.cli."):
                bad.append(f"{MODULES[m].relative_to(SRC)}:{line} imports {mod}")
    assert not bad, "only cli/ and */commands.py may import cli/:\n" + "\n".join(bad)


def test_client_sits_below_the_processes() -> None:
    above = ("cli", "local", "agent", "server")
    bad = [f"{MODULES[m].relative_to(SRC)}:{line} imports {mod}" for m, imps in IMPORTS.items()
           if m == "mizzen.client" or m.startswith("mizzen.client.") for mod, line in imps
           if mod.startswith("mizzen.") and any(_sub(mod) == a or _sub(mod).startswith(a + ".") for a in above)]
    assert not bad, "client/ must not import the processes that use it:\n" + "\n".join(bad)


def _cycles() -> list[list[str]]:
    graph = {m: sorted({o for mod, _ in imps if (o := _ours(mod)) and o != m}) for m, imps in IMPORTS.items()}
    # a package's __init__ importing its own submodules is how packages re-export: not a cycle
    for m in graph:
        graph[m] = [o for o in graph[m] if not o.startswith(m + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles() -> None:
    cycles = _cycles()
    assert not cycles, "modules that import each other (directly or in a ring):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


def test_modules_stay_small() -> None:
    big = [f"{p.relative_to(SRC)}: {n} lines" for p in MODULES.values()
           if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not big, f"modules over {MAX_LINES} lines, split them by concern:\n" + "\n".join(big)


def test_the_rules_see_the_tree() -> None:
    """A walk that found nothing would pass every rule: make sure it sees the layers and their imports."""
    assert {f"mizzen.{p}" for p in PURE} <= set(MODULES)
    assert any(mod.startswith("envoy.") for mod, _ in IMPORTS["mizzen.translate.listeners"])
    assert _ours("mizzen.model.types.Proxy") == "mizzen.model.types"
