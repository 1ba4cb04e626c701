"""Reading files for analysis, where one bad document must not hide the others (unlike `apply`, which is
all-or-nothing). PURE: (name, text) pairs in; resources, workloads and IST0106 messages out."""
from __future__ import annotations

import re
from typing import Any, Iterable

from ..api import DEFAULT_NAMESPACE, Resource
from ..api.base import lenient
from ..api.kinds import KINDS
from ..api.load import _list_items, parse_document
from ..api.yamlload import YamlError, load_documents
from .base import ERROR, K8S_GATEWAY, Message, Workload

# Kubernetes kinds whose pods (labels) matter to selectors; Mizzen does not run them
POD_TEMPLATES = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
_SPLIT = re.compile(r"^---[ \t]*(?:#.*)?$", re.M)


def _workload(doc: dict, namespace: str) -> Workload | None:
    kind = doc.get("kind")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name, ns = str(meta.get("name", "")), str(meta.get("namespace") or namespace)
    if kind == "Gateway" and str(doc.get("apiVersion", "")).startswith("gateway.networking.k8s.io/"):
        # a Kubernetes Gateway API gateway: only its listeners' hostnames matter (VirtualServices may bind it)
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        hosts = [str(x.get("hostname") or "*") for x in spec.get("listeners") or [] if isinstance(x, dict)]
        return Workload(K8S_GATEWAY, ns, name, tuple(("hostname", h) for h in hosts or ["*"]))
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


_PLACEHOLDER = {"list": [], "dict": {}, "string": "", "int": 0, "bool": False, "float": 0.0}


def _lenient_parse(doc: dict, name: str, index: int, namespace: str) -> Resource | None:
    """Parse with Istio's rules off and required fields filled in (istioctl's test inputs are often partial:
    a Gateway with only a selector): what an analyzer can still look at."""
    import copy

    d = copy.deepcopy(doc)
    for _ in range(40):
        with lenient():
            res, errs, _ = parse_document(d, file=name, index=index, default_namespace=namespace)
        if res is not None:
            return res
        progressed = False
        for e in errs:
            if not e.path or not e.path.startswith("spec"):
                continue
            parts = re.findall(r"[^.\[\]]+|\[\d+\]", e.path)
            node, parent, key = d, None, None
            chain: list[tuple[Any, Any]] = []
            ok = True
            for part in parts:
                parent, key = node, int(part[1:-1]) if part.startswith("[") else part
                chain.append((parent, key))
                if isinstance(node, dict) and not isinstance(key, int):
                    node = node.get(key) if key in node else None
                elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                    node = node[key]
                else:
                    ok = False
                    break
            if not ok or parent is None:
                continue
            want = next((v for t, v in _PLACEHOLDER.items() if f"valid {t}" in e.message or
                         (t == "string" and "valid string" in e.message)), None)
            owner = chain[-2] if len(chain) >= 2 else None
            if e.message == "Field required" and owner and isinstance(owner[0], list) and \
                    isinstance(owner[1], int) and parent == {}:
                owner[0].pop(owner[1])  # an empty list item (`- {}`): Istio's analyzers skip it too
            elif e.message == "Field required" and isinstance(parent, dict):
                parent[key] = {}
            elif want is not None and isinstance(parent, (dict, list)):
                parent[key] = copy.deepcopy(want)
            elif isinstance(parent, dict) and key in parent:
                del parent[key]  # a value of no use: drop it
            elif isinstance(parent, list) and isinstance(key, int):
                parent.pop(key)
            else:
                continue
            progressed = True
        if not progressed:
            return None
    return None


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
                if res is None and errs:  # as istioctl: reported, and still analyzed as far as it goes
                    res = _lenient_parse(d, name, index, namespace)
                if res is not None:
                    resources[res.key] = res
    return list(resources.values()), workloads, messages


def registered_workloads(instances: Iterable[dict[str, Any]]) -> list[Workload]:
    """What runs in a live mesh besides its Workload resources: the registry's instances (`GET
    /api/v1/instances` items: namespace, workload, labels), one Workload per workload and label set, so
    selectors (a DestinationRule's subsets, a Gateway's selector) are checked against the pods that run."""
    seen: dict[tuple[str, str, tuple[tuple[str, str], ...]], Workload] = {}
    for i in instances:
        labels = i.get("labels") if isinstance(i.get("labels"), dict) else {}
        ns = str(i.get("namespace") or DEFAULT_NAMESPACE)
        name = str(i.get("workload") or i.get("id") or "")
        key = (ns, name, tuple(sorted((str(k), str(v)) for k, v in labels.items())))
        seen.setdefault(key, Workload("Workload", ns, name, key[2]))
    return list(seen.values())
