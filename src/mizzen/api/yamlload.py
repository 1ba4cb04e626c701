"""Reading YAML (and JSON) the way Kubernetes users expect. PURE: text in, plain Python values out.

What kubectl and Istio users rely on, which a stock YAML 1.1 loader gets wrong:
- YAML 1.2 core schema: only `true`/`false` (any case style) are booleans, so `on`, `off`, `yes`, `no`, `y`
  stay strings; no sexagesimal numbers (`2001:10:20:30` is a string, not an int); no timestamps; `0o17` and
  `0x1f` are integers.
- A key repeated in one mapping is an error naming the key and both lines (sigs.k8s.io/yaml refuses them too),
  not a silent "last one wins". `<<` merge keys work as in go-yaml (explicit keys win).
- Mapping keys become strings, as JSON requires (`80: x` is the key "80").
- Values JSON cannot carry are refused: `.inf`/`.nan`, integers beyond 64 bits, `!!binary`, `!!timestamp`,
  custom tags, non-scalar keys.

And hostile input is bounded, each with an error naming the line: nesting depth, the size an alias-heavy
document expands to (a "billion laughs" bomb is refused before it is built), the text's size.

The parser is libyaml's (PyYAML's C extension) when present; the objects are built here, iteratively, from its
events — no recursion, so depth cannot exhaust the stack.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

try:  # libyaml: ~10x faster than the pure-Python parser
    from yaml._yaml import CParser as _Parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.loader import Loader as _Parser  # type: ignore[assignment]

MAX_TEXT_BYTES = 32 * 1024 * 1024  # one input file
MAX_DEPTH = 100  # nested mappings/sequences in one document (Istio's deepest kinds need ~15)
MIN_EXPANSION_BUDGET = 1024 * 1024  # approx. JSON bytes a document may expand to through aliases, at least...
EXPANSION_FACTOR = 4  # ...or this many times the file's size
MAX_INT = 2**64 - 1
MIN_INT = -(2**63)


class YamlError(ValueError):
    """Input that cannot be read as Kubernetes-style YAML; line and column are 1-based (0 when unknown)."""

    def __init__(self, message: str, line: int = 0, column: int = 0, document: int | None = None):
        self.message, self.line, self.column, self.document = message, line, column, document
        where = f" at line {line}, column {column}" if line else ""
        super().__init__(f"{message}{where}")


@dataclass(frozen=True)
class Document:
    index: int  # 0-based position in the file, counting empty documents
    line: int  # 1-based line where it starts
    value: Any  # None for an empty document


_TAG = "tag:yaml.org,2002:"
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT8_GO = re.compile(r"[-+]?0[0-7]+")  # go-yaml (v2 and v3) still reads YAML 1.1's 0777 as octal
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF_NAN = re.compile(r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
_MERGE = "<<"


def _mark(ev: Any) -> tuple[int, int]:
    m = getattr(ev, "start_mark", None)
    return (m.line + 1, m.column + 1) if m is not None else (0, 0)


def _show(s: str, limit: int = 60) -> str:
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def _int(text: str, ev: Any) -> int:
    if _INT8.fullmatch(text):
        v = int(text[2:], 8)
    elif _INT8_GO.fullmatch(text):
        v = int(text, 8)
    elif _INT16.fullmatch(text):
        v = int(text[2:], 16)
    elif _INT10.fullmatch(text):
        if len(text) > 40:
            raise YamlError(f"number {_show(text)} is out of range", *_mark(ev))
        v = int(text)
    else:
        raise YamlError(f"{_show(text)} is not an integer", *_mark(ev))
    if not MIN_INT <= v <= MAX_INT:
        raise YamlError(f"number {_show(text)} is out of range (more than 64 bits)", *_mark(ev))
    return v


def _float(text: str, ev: Any) -> float:
    if _INF_NAN.fullmatch(text):
        raise YamlError(f"{text} cannot be represented in JSON (Kubernetes rejects it too)", *_mark(ev))
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise YamlError(f"number {_show(text)} is out of range", *_mark(ev))
    return v


def _plain(text: str, ev: Any) -> Any:
    """Resolve an untagged plain scalar with the YAML 1.2 core schema."""
    if not text:
        return None
    if text[0] not in "~nNtTfF-+.0123456789":
        return text  # fast path: most values are ordinary words
    if _NULL.fullmatch(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT10.fullmatch(text) or _INT8.fullmatch(text) or _INT16.fullmatch(text):
        return _int(text, ev)
    if _FLOAT.fullmatch(text) or _INF_NAN.fullmatch(text):
        return _float(text, ev)
    return text


def _scalar(ev: Any) -> Any:
    text, tag = ev.value, ev.tag
    if tag is None or tag == "!":
        return _plain(text, ev) if ev.implicit[0] and tag is None else text
    if not tag.startswith(_TAG):
        raise YamlError(f"tag {_show(tag)} is not supported: only plain YAML/JSON values are", *_mark(ev))
    short = tag[len(_TAG):]
    if short == "str":
        return text
    if short == "int":
        return _int(text, ev)
    if short == "float":
        if _INT10.fullmatch(text):
            return float(_int(text, ev))
        if not _FLOAT.fullmatch(text) and not _INF_NAN.fullmatch(text):
            raise YamlError(f"{_show(text)} is not a number", *_mark(ev))
        return _float(text, ev)
    if short == "bool":
        if text not in _BOOL:
            raise YamlError(f"{_show(text)} is not a boolean (true or false)", *_mark(ev))
        return _BOOL[text]
    if short == "null":
        return None
    raise YamlError(f"tag !!{short} is not supported: only strings, numbers, booleans, null, lists and maps "
                    "are (as in JSON)", *_mark(ev))


def _key(value: Any, ev: Any) -> str:
    """A mapping key as JSON has it (sigs.k8s.io/yaml turns scalar keys into strings)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return ev.value if isinstance(value, float) else str(value)
    raise YamlError("a mapping key must be a string or number, not a list or mapping", *_mark(ev))


def _size(value: Any) -> int:
    """Approximate JSON size of a scalar (containers are summed by the builder)."""
    if isinstance(value, str):
        return len(value) + 2
    return 8


def _check_text(text: str) -> None:
    if len(text) > MAX_TEXT_BYTES:
        raise YamlError(f"input is too large ({len(text)} characters; at most {MAX_TEXT_BYTES})")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            line = text.count("\n", 0, e.start) + 1
            col = e.start - (text.rfind("\n", 0, e.start) + 1) + 1
            raise YamlError(f"invalid character {ascii(text[e.start])} (a lone UTF-16 surrogate)", line, col) from None


class _Frame:
    __slots__ = ("kind", "value", "anchor", "size", "key", "key_ev", "lines", "merged", "ev")

    def __init__(self, kind: str, anchor: str | None, ev: Any):
        self.kind = kind  # "map" | "seq"
        self.value: Any = {} if kind == "map" else []
        self.anchor = anchor
        self.size = 2
        self.key: Any = _NO_KEY  # mappings: the pending key
        self.key_ev: Any = None
        self.lines: dict[str, int] = {}  # mappings: key -> line (duplicate detection)
        self.merged: list[dict] = []  # mappings: `<<` sources, applied at the end
        self.ev = ev


_NO_KEY = object()


# An IPv6 address (optionally a CIDR) as a plain item of a flow list: go-yaml reads `[1.2.3.4, 2001:db8::]` and
# `[::1]` as strings, libyaml stops at the ':' before ']' or at a leading ':'. Quoted, they mean the same.
_FLOW_IPV6 = re.compile(r"(?<=[\[,])(\s*)((?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:/\d{1,3})?)(?=\s*[,\]])")


def load_documents(text: str) -> list[Document]:
    """Every document of a YAML (or JSON) text, as plain values. Raises YamlError (with line and document)."""
    try:
        return _load_documents(text)
    except YamlError as first:
        if "':'" not in first.message and "node content" not in first.message:
            raise
        fixed = _FLOW_IPV6.sub(lambda m: f"{m.group(1)}'{m.group(2)}'", text)
        if fixed == text:
            raise
        try:
            return _load_documents(fixed)
        except YamlError:
            raise first from None


def _load_documents(text: str) -> list[Document]:
    _check_text(text)
    budget = max(MIN_EXPANSION_BUDGET, EXPANSION_FACTOR * len(text))
    parser = _Parser(text)
    docs: list[Document] = []
    index = -1
    try:
        while True:
            ev = parser.get_event()
            if ev is None or isinstance(ev, yaml.StreamEndEvent):
                break
            if isinstance(ev, yaml.DocumentStartEvent):
                index += 1
                line = _mark(ev)[0]
                try:
                    value = _document(parser, budget)
                except YamlError as e:
                    e.document = index
                    raise
                docs.append(Document(index, line or 1, value))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise YamlError(f"not valid YAML: {e.problem or e.context or e}", line, col,
                        index if index >= 0 else None) from None
    except yaml.YAMLError as e:
        raise YamlError(f"not valid YAML: {e}", document=index if index >= 0 else None) from None
    finally:
        dispose = getattr(parser, "dispose", None)
        if dispose is not None:
            dispose()
    return docs


def _document(parser: Any, budget: int) -> Any:
    """Build one document's value from parser events, up to its DocumentEndEvent."""
    anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, expanded size)
    stack: list[_Frame] = []
    result: Any = None
    have_result = False
    total = 0
    while True:
        ev = parser.get_event()
        if isinstance(ev, yaml.DocumentEndEvent):
            return result if have_result else None
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            kind = "map" if isinstance(ev, yaml.MappingStartEvent) else "seq"
            tag = ev.tag
            if tag not in (None, "!", _TAG + ("map" if kind == "map" else "seq")):
                raise YamlError(f"tag {_show(tag)} is not supported on a {'mapping' if kind == 'map' else 'list'}",
                                *_mark(ev))
            if len(stack) >= MAX_DEPTH:
                raise YamlError(f"nested more than {MAX_DEPTH} levels deep", *_mark(ev))
            if stack and stack[-1].kind == "map" and stack[-1].key is _NO_KEY:
                raise YamlError("a mapping key must be a string or number, not a list or mapping", *_mark(ev))
            stack.append(_Frame(kind, ev.anchor, ev))
            continue
        if isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            frame = stack.pop()
            if frame.kind == "map" and frame.merged:
                for src in frame.merged:
                    for k, v in src.items():
                        frame.value.setdefault(k, v)
            value, size = frame.value, frame.size
            if frame.anchor is not None:
                anchors[frame.anchor] = (value, size)
            ev_for_add = frame.ev
            added = 2  # its children were counted as they came
        elif isinstance(ev, yaml.ScalarEvent):
            if stack and stack[-1].kind == "map" and stack[-1].key is _NO_KEY:
                top = stack[-1]
                if ev.tag is None and ev.implicit[0] and ev.value == _MERGE:
                    top.key, top.key_ev = _MERGE, ev
                else:
                    top.key, top.key_ev = _key(_scalar(ev), ev), ev
                if ev.anchor is not None:
                    anchors[ev.anchor] = (top.key, _size(top.key))
                continue
            value = _scalar(ev)
            if isinstance(value, str) and not value.isascii() and _has_surrogate(value):
                raise YamlError("invalid character (a lone UTF-16 surrogate)", *_mark(ev))
            size = added = _size(value)
            if ev.anchor is not None:
                anchors[ev.anchor] = (value, size)
            ev_for_add = ev
        elif isinstance(ev, yaml.AliasEvent):
            if ev.anchor not in anchors:
                raise YamlError(f"unknown alias *{ev.anchor}", *_mark(ev))
            value, size = anchors[ev.anchor]
            added = size  # an alias costs what it expands to
            if stack and stack[-1].kind == "map" and stack[-1].key is _NO_KEY:
                top = stack[-1]
                top.key, top.key_ev = _key(value, ev), ev
                continue
            ev_for_add = ev
        else:  # pragma: no cover - libyaml emits nothing else inside a document
            raise YamlError(f"unexpected YAML event {type(ev).__name__}", *_mark(ev))
        total += added
        if total > budget:
            raise YamlError(f"document expands to more than {budget} bytes (through aliases?): refused",
                            *_mark(ev_for_add))
        if not stack:
            result, have_result = value, True
            continue
        top = stack[-1]
        top.size += size + 1
        if top.kind == "seq":
            top.value.append(value)
            continue
        key, key_ev = top.key, top.key_ev
        top.key, top.key_ev = _NO_KEY, None
        if key == _MERGE and key_ev.tag is None and key_ev.implicit[0]:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(s, dict) for s in sources):
                raise YamlError("a << merge takes a mapping or a list of mappings", *_mark(key_ev))
            top.merged.extend(sources)
            continue
        line = _mark(key_ev)[0]
        if key in top.lines:
            raise YamlError(f"duplicate key {_show(key)} in a mapping (first at line {top.lines[key]})",
                            *_mark(key_ev))
        top.lines[key] = line
        top.value[key] = value


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
