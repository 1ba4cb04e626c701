"""One Istio document from a kind and an indented spec, and the field errors `load_text` gives for it (shared by
the per-rule tests)."""
from __future__ import annotations

import textwrap

from mizzen.api import InvalidConfig, load_text
from mizzen.api.kinds import KINDS


def doc(kind: str, spec: str, name: str = "x", namespace: str = "ns") -> str:
    return (f"apiVersion: {KINDS[kind].api_versions[0]}\nkind: {kind}\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\n"
            "spec:\n" + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n")


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except InvalidConfig as e:
        return [f"{i.path}: {i.message}" for i in e.issues]
    return []
