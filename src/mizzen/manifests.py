"""Reading manifests from disk or stdin (kept out of the pure `api` layer): the one reader behind
`mizzen apply/delete/analyze -f` and `mizzen up MESH.yaml`."""
from __future__ import annotations

import os
import sys
from typing import Iterable

from .api import DEFAULT_NAMESPACE, InvalidConfig, Issue, LoadResult, load_sources

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


def read_inputs(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Paths → [(name, text)]: `-` is stdin (named `<stdin>`), a directory gives its *.yaml/*.yml/*.json files
    (sorted). Every file that cannot be read, and every directory without manifests, is reported as an Issue
    naming it; any problem raises InvalidConfig with all of them."""
    out: list[tuple[str, str]] = []
    problems: list[Issue] = []
    for p in paths:
        if p == STDIN:
            out.append(("<stdin>", sys.stdin.read()))
            continue
        if os.path.isdir(p):
            names = sorted(n for n in os.listdir(p) if n.endswith(MANIFEST_SUFFIXES))
            if not names:
                problems.append(Issue("no *.yaml or *.yml files in this directory", p))
            files = [os.path.join(p, n) for n in names]
        else:
            files = [p]
        for f in files:
            try:
                with open(f, encoding="utf-8") as fh:
                    out.append((f, fh.read()))
            except (OSError, UnicodeDecodeError) as e:
                problems.append(Issue(f"cannot read: {getattr(e, 'strerror', None) or e}", f))
    if problems:
        raise InvalidConfig(problems)
    return out


def load_files(paths: Iterable[str], *, default_namespace: str = DEFAULT_NAMESPACE) -> LoadResult:
    """Read (as `read_inputs`) and load several inputs as one all-or-nothing input."""
    return load_sources(read_inputs(paths), default_namespace=default_namespace)
