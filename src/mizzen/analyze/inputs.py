"""Reading files for analysis, where one bad document must not hide the others (unlike `apply`, which is
all-or-nothing). PURE: (name, text) pairs in; resources, workloads and IST0106 messages out."""
from __future__ import annotations

import re
from typing import Any, Iterable

from ..api import DEFAULT_NAMESPACE, Resource
from ..api.kinds import KINDS
from ..api.load import _list_items, parse_document
from ..api.yamlload import YamlError, load_documents
from .base import ERROR, Message, Workload

# Kubernetes kinds whose pods (labels) matter to selectors; Mizzen does not run them
POD_TEMPLATES = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
_SPLIT = re.compile(r"^---[ \t]*(?:#.*)?$", re.M)


def _workload(doc: dict, namespace: str) -> Workload | None:
    kind = doc.get("kind")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name, ns = str(meta.get("name", "")), str(meta.get("namespace") or namespace)
    if kind == "Pod":
        labels = meta.get("labels")
    elif kind in POD_TEMPLATES:
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        tmpl = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        labels = (tmpl.get("metadata") or {}).get("labels") if isinstance(tmpl.get("metadata"), dict) else None
    else:
        return None
    labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    return Workload(str(kind), ns, name, tuple(sorted(labels.items())))


def _schema_message(issue, namespace: str) -> Message:
    what = f"{issue.kind} {issue.namespace or namespace}/{issue.name or '?'}" if issue.kind else issue.file
    where = f" ({issue.file}" + (f", document {issue.document + 1}" if issue.document is not None else "") + ")"
    return Message("IST0106", ERROR, what, f"Schema validation error: {issue.message}{where}",
                   "fix the field as described", issue.path or "")


def _documents(name: str, text: str) -> tuple[list[tuple[int, Any]], list[Message]]:
    """Every document that parses; a broken one is reported with its position and the others still read."""
    try:
        return [(d.index, d.value) for d in load_documents(text)], []
    except YamlError as e:
        msgs = [Message("IST0106", ERROR, name, f"Schema validation error: {e}", "fix the YAML", "")]
    docs: list[tuple[int, Any]] = []
    chunks = _SPLIT.split(text)
    for i, chunk in enumerate(chunks):
        try:
            docs += [(i, d.value) for d in load_documents(chunk)]
        except YamlError:
            continue  # the broken part, reported above
    return docs, msgs


def read_for_analysis(sources: Iterable[tuple[str, str]], namespace: str = DEFAULT_NAMESPACE
                      ) -> tuple[list[Resource], list[Workload], list[Message]]:
    resources: dict = {}
    workloads: list[Workload] = []
    messages: list[Message] = []
    for name, text in sources:
        docs, msgs = _documents(name, text)
        messages += msgs
        for index, doc in docs:
            if doc is None:
                continue
            items = _list_items(doc)
            for d in (items if items is not None else [doc]):
                w = _workload(d, namespace) if isinstance(d, dict) else None
                if w is not None:
                    workloads.append(w)
                    continue
                if isinstance(d, dict) and d.get("kind") not in KINDS:
                    continue  # istioctl analyzes the kinds it knows; others are not its business
                res, errs, _ = parse_document(d, file=name, index=index, default_namespace=namespace)
                messages += [_schema_message(i, namespace) for i in errs]
                if res is not None:
                    resources[res.key] = res
    return list(resources.values()), workloads, messages
