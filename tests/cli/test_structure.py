"""The process side's layering, read from the source with `ast`: nothing outside `cli/` imports `cli/` (click
command modules, `*/commands.py`, aside); `client/` sits below `cli/`, `local/` and `agent/`; no import
cycle among the modules of `client/`, `local/`, `agent/` and `cli/`."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PROCESS_SIDE = ("mizzen.client", "mizzen.local", "mizzen.agent", "mizzen.cli")


def _modules() -> dict[str, Path]:
    out = {}
    for f in (SRC / "mizzen").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The mizzen modules `name` imports (anywhere in the file), submodules resolved."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            pkg = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join(pkg + (node.module.split(".") if node.module else []))
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        out |= {t for t in targets if t.startswith("mizzen") and t in MODULES}
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _in(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_nothing_outside_cli_imports_cli_but_command_modules():
    bad = sorted(f"{m} imports {t}" for m, ts in GRAPH.items() for t in ts
                 if _in(t, "mizzen.cli") and not _in(m, "mizzen.cli") and MODULES[m].name != "commands.py")
    assert not bad, bad


def test_client_is_below_cli_local_and_agent():
    bad = sorted(f"{m} imports {t}" for m, ts in GRAPH.items() if _in(m, "mizzen.client") for t in ts
                 if _in(t, "mizzen.cli", "mizzen.local", "mizzen.agent", "mizzen.server"))
    assert not bad, bad


def test_no_import_cycle_on_the_process_side():
    nodes = {m for m in GRAPH if _in(m, *PROCESS_SIDE)}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m] & nodes):
            if t == m or (m.startswith(t + ".") and MODULES[t].name == "__init__.py"):
                continue  # a module importing its own package's __init__ is how Python loads it anyway
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(nodes):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles
