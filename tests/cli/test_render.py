"""Table cells of `mizzen get` for the kinds whose columns say something about mesh membership."""
from __future__ import annotations

from mizzen.cli.render import kind_cells, kind_columns


def test_workload_sidecar_column_says_yes_no_or_by_namespace() -> None:
    assert kind_columns("Workload", False) == ["REPLICAS", "SIDECAR", "PORTS"]
    cell = lambda spec: kind_cells({"kind": "Workload", "spec": spec}, False)[1]  # noqa: E731
    assert (cell({"sidecar": True}), cell({"sidecar": False}), cell({})) == ("yes", "no", "by-ns")


def test_namespace_inject_column() -> None:
    assert kind_columns("Namespace", False) == ["INJECT"]
    doc = {"kind": "Namespace", "metadata": {"name": "legacy", "labels": {"mizzen.dev/inject": "false"}}}
    assert kind_cells(doc, False) == ["false"]
    assert kind_cells({"kind": "Namespace", "metadata": {"name": "shop"}}, False) == ["-"]
