"""Measure Mizzen against Istio's own test data (not part of `make test`; nothing of Istio's is copied here).

    .venv/bin/python tools/istio_fidelity.py --istio PATH [--verbose]

PATH is a checkout of istio/istio, or its bare git directory (the files are then read with `git archive`).
It reports:
1. validation corpus (pkg/config/validation/testdata/crds): of the kinds Mizzen implements, the share of
   Istio's valid documents Mizzen accepts, and of the invalid ones it rejects with a field-named error;
2. other valid documents of those kinds (samples/, tests/testdata/config, pilot & istioctl testdata): the
   share accepted, and how many sample files `mizzen apply -f` takes whole (with and without --skip-unknown);
3. analyzer test cases (pkg/config/analysis/analyzers/analyzers_test.go): for each case whose expected codes
   Mizzen implements, whether `mizzen analyze` reports the same codes on the same resources, and any
   message of an implemented code that istioctl does not expect (a false positive).
"""
from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mizzen.analyze import analyze  # noqa: E402
from mizzen.analyze.inputs import read_for_analysis  # noqa: E402
from mizzen.api import InvalidConfig, load_sources  # noqa: E402
from mizzen.api.kinds import KINDS  # noqa: E402
from mizzen.api.load import _list_items, parse_document  # noqa: E402
from mizzen.api.yamlload import YamlError, load_documents  # noqa: E402

ISTIO_KINDS = {k for k, v in KINDS.items() if any("istio.io" in a for a in v.api_versions)}
PATHS = ["pkg/config/validation/testdata", "pkg/config/analysis", "samples", "tests/testdata/config",
         "pilot", "istioctl"]


def materialize(istio: Path) -> Path:
    if (istio / "pkg").is_dir():
        return istio
    out = Path(tempfile.mkdtemp(prefix="istio-corpus-"))
    data = subprocess.run(["git", f"--git-dir={istio}", "archive", "HEAD", *PATHS], capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(out, filter="data")
    return out


def documents(path: Path) -> list[dict]:
    try:
        docs = load_documents(path.read_text(errors="replace"))
    except YamlError:
        try:
            docs_raw = [d for d in yaml.safe_load_all(path.read_text(errors="replace"))]
        except yaml.YAMLError:
            return []
        return [d for d in docs_raw if isinstance(d, dict)]
    out = []
    for d in docs:
        items = _list_items(d.value)
        out += [x for x in (items if items is not None else [d.value]) if isinstance(x, dict)]
    return out


def validation_corpus(root: Path, verbose: bool) -> None:
    d = root / "pkg/config/validation/testdata/crds"
    stats = Counter()
    for f in sorted(d.glob("*.yaml")):
        valid = f.name.endswith("-valid.yaml")
        for doc in documents(f):
            doc.pop("_err", None)
            kind = doc.get("kind")
            if kind not in ISTIO_KINDS:
                continue
            res, errs, _ = parse_document(doc, file=f.name)
            name = f"{f.name}: {kind} {doc.get('metadata', {}).get('name')}"
            if valid:
                stats["valid"] += 1
                stats["valid_ok"] += res is not None
                if res is None and verbose:
                    print("  REJECTED valid", name, "|", "; ".join(str(e) for e in errs)[:300])
            else:
                stats["invalid"] += 1
                ok = res is None and any(e.path for e in errs)
                stats["invalid_ok"] += ok
                if not ok and verbose:
                    print("  ACCEPTED invalid" if res is not None else "  rejected without field", name)
    print(f"validation corpus: valid accepted {stats['valid_ok']}/{stats['valid']} "
          f"({100 * stats['valid_ok'] / max(1, stats['valid']):.0f}%), invalid rejected with a field "
          f"{stats['invalid_ok']}/{stats['invalid']} ({100 * stats['invalid_ok'] / max(1, stats['invalid']):.0f}%)")


def valid_corpus(root: Path, verbose: bool) -> None:
    files = sorted(p for base in ("samples", "tests/testdata/config", "pilot", "istioctl")
                   for p in (root / base).rglob("*.y*ml") if "testdata/crds" not in str(p)
                   and "helm" not in str(p) and "templates" not in str(p))
    stats = Counter()
    for f in files:
        for doc in documents(f):
            kind, api = doc.get("kind"), str(doc.get("apiVersion", ""))
            if kind not in ISTIO_KINDS or "istio.io" not in api:
                continue
            res, errs, _ = parse_document(doc, file=str(f.relative_to(root)))
            stats["docs"] += 1
            stats["ok"] += res is not None
            if res is None and verbose:
                print("  REJECTED", f.relative_to(root), kind, "|", "; ".join(f"{e.path}: {e.message}"
                                                                            for e in errs)[:300])
    print(f"other Istio documents of implemented kinds: accepted {stats['ok']}/{stats['docs']} "
          f"({100 * stats['ok'] / max(1, stats['docs']):.0f}%)")
    whole = Counter()
    for f in sorted((root / "samples").rglob("*.y*ml")):
        text = f.read_text(errors="replace")
        if not any(k in text for k in ("networking.istio.io", "telemetry.istio.io")):
            continue
        whole["files"] += 1
        for skip in (False, True):
            try:
                load_sources([(str(f), text)], skip_unknown=skip)
                whole[f"ok{skip}"] += 1
            except InvalidConfig as e:
                if verbose:
                    unknown = sorted({m.group(1) for i in e.issues for m in [re.search(r"unknown kind '(\w+)'",
                                                                                       str(i))] if m})
                    why = (f"Kubernetes kinds Mizzen does not have: {', '.join(unknown)}" if unknown and not skip
                           else "not YAML (a Helm template)" if "templates/" in str(f) else "")
                    print(f"  FILE{' (--skip-unknown)' if skip else ''}", f.relative_to(root), "|",
                          why or str(e.issues[0])[:200])
    print(f"Istio sample files with Istio config, applied whole: {whole['okFalse']}/{whole['files']}; "
          f"with --skip-unknown: {whole['okTrue']}/{whole['files']}")


# istioctl's analyzer -> Mizzen's analyzers that report its codes
ANALYZER_MAP = {
    "virtualservice.DestinationHostAnalyzer": ["destination_hosts", "ingress_subsets"],
    "virtualservice.DestinationRuleAnalyzer": ["destination_subsets"],
    "virtualservice.GatewayAnalyzer": ["gateways"],
    "virtualservice.ConflictingMeshGatewayHostsAnalyzer": ["conflicting_mesh_hosts"],
    "gateway.IngressGatewayPortAnalyzer": ["gateway_ports"],
    "gateway.ConflictingGatewayAnalyzer": ["conflicting_gateways"],
    "gateway.CertificateAnalyzer": ["gateway_duplicate_certificates"],
    "destinationrule.CaCertificateAnalyzer": ["server_certificate_verification"],
    "destinationrule.PodNotSelectedAnalyzer": ["subsets_select_pods"],
    "serviceentry.ProtocolAddressesAnalyzer": ["service_entry_addresses"],
    "serviceentry.ConflictingServiceEntryProtocolAnalyzer": ["conflicting_service_entry_protocols"],
    "sidecar.SelectorAnalyzer": ["sidecar_selectors"],
    "telemetry.SelectorAnalyzer": ["telemetry_selectors"],
    "telemetry.DefaultSelectorAnalyzer": ["telemetry_default_selectors"],
    "envoyfilter.EnvoyPatchAnalyzer": ["envoy_filter_operations"],
    "service.PortNameAnalyzer": ["port_names"],
    "deprecation.FieldAnalyzer": ["deprecated_fields"],
    "schemaValidation.CollectionValidationAnalyzer": ["unreachable_rules"],
}


# codes where Mizzen differs from istioctl's test expectations on purpose (docs/istio-fidelity.md)
BY_DESIGN = {
    "IST0134": "Mizzen allocates an address to every named ServiceEntry host and writes it into the pods' hosts "
               "files, as Istio's DNS capture with auto-allocation does (istioctl stays silent then too)",
}


def analyzer_cases(root: Path) -> list[tuple[str, str, list[str], list[tuple[str, str]]]]:
    src = (root / "pkg/config/analysis/analyzers/analyzers_test.go").read_text()
    msgs = (root / "pkg/config/analysis/msg/messages.yaml").read_text()
    codes = {m["name"]: m["code"] for m in yaml.safe_load(msgs)["messages"]}
    grid = src[src.index("var testGrid = []testCase{"):]
    out = []
    for c in re.split(r"\n\t\{\n", grid)[1:]:
        name = re.search(r'name:\s*"([^"]+)"', c)
        if not name:
            continue
        an = re.search(r"analyzer:\s*&?([\w.]+)", c)
        files = re.findall(r'"(testdata/[^"]+\.yaml)"', c)
        if "meshConfigFile" in c or "meshNetworksFile" in c:
            continue  # cases about mesh config: Mizzen has none
        expected = [(codes.get(m, m), r) for m, r in re.findall(r'\{msg\.(\w+),\s*"([^"]+)"\}', c)]
        out.append((name.group(1), an.group(1) if an else "", files, expected))
    return out


def _same_resource(istio: str, ours: str) -> bool:
    kind, _, rest = istio.partition(" ")
    okind, _, orest = ours.partition(" ")
    if kind != okind:
        return False
    if "/" in rest:
        return rest == orest
    return orest.split("/", 1)[-1] == rest


def analyzer_corpus(root: Path, verbose: bool) -> None:
    implemented = {"IST0101", "IST0109", "IST0110", "IST0111", "IST0112", "IST0118", "IST0128", "IST0129",
                   "IST0130", "IST0131", "IST0132", "IST0134", "IST0138", "IST0140", "IST0145", "IST0150",
                   "IST0151", "IST0152", "IST0153", "IST0154", "IST0155", "IST0159", "IST0160", "IST0162",
                   "IST0173", "IST0174", "IST0177", "IST0002"}
    base = root / "pkg/config/analysis/analyzers"
    stats = Counter()
    for name, istio_analyzer, files, expected in analyzer_cases(root):
        codes_expected = {c for c, _ in expected}
        if istio_analyzer not in ANALYZER_MAP or not codes_expected <= implemented:
            stats["skipped"] += 1
            continue
        sources = [(f, (base / f).read_text()) for f in files if (base / f).exists()]
        resources, workloads, msgs = read_for_analysis(sources)
        ours = [(m.code, m.resource) for m in analyze(resources, workloads, only=ANALYZER_MAP[istio_analyzer])
                if m.code in implemented]
        missing = [e for e in expected if not any(c == e[0] and _same_resource(e[1], r) for c, r in ours)]
        extra = [o for o in ours if not any(c == o[0] and _same_resource(r, o[1]) for c, r in expected)]
        stats["cases"] += 1
        stats["agree"] += not missing
        stats["by_design"] += bool(missing) and all(c in BY_DESIGN for c, _ in missing) and not extra
        stats["false_positive_cases"] += bool(extra)
        stats["messages"] += len(expected)
        stats["messages_found"] += len(expected) - len(missing)
        if verbose and (missing or extra):
            why = "; ".join(sorted({BY_DESIGN[c] for c, _ in missing if c in BY_DESIGN}))
            print(f"  {name}: missing {missing} extra {sorted(set(extra))}" + (f" — by design: {why}" if why else ""))
    print(f"analyzer test cases of analyzers Mizzen implements: same code on the same resources in "
          f"{stats['agree']}/{stats['cases']} cases ({100 * stats['agree'] / max(1, stats['cases']):.0f}%), "
          f"{stats['messages_found']}/{stats['messages']} expected messages; differing by design: {stats['by_design']} "
          f"cases; cases with a message istioctl does "
          f"not give: {stats['false_positive_cases']}; cases of analyzers Mizzen does not implement "
          f"(Kubernetes-only, mesh config, secrets): {stats['skipped']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--istio", required=True, type=Path, help="istio/istio checkout or bare git dir")
    ap.add_argument("--verbose", "-v", action="store_true", help="list every disagreement")
    a = ap.parse_args()
    root = materialize(a.istio)
    validation_corpus(root, a.verbose)
    valid_corpus(root, a.verbose)
    analyzer_corpus(root, a.verbose)


if __name__ == "__main__":
    main()
