"""The subset of go-bexpr (Consul's `filter` query parameter) that Mizzen's Consul API understands.

Grammar: `expr := term (or term)*`, `term := factor (and factor)*`, `factor := not factor | ( expr ) | match`;
matches: `Sel == V`, `Sel != V`, `V in Sel`, `V not in Sel`, `Sel contains V`, `Sel not contains V`,
`Sel matches "re"`, `Sel not matches "re"`, `Sel is empty`, `Sel is not empty`. A selector is a dotted path
(`Service.Meta.version`, `Service.Tags`, `Node.Node`), map keys may be quoted (`Service.Meta["a.b"]`); a path
through a list (`Checks.Status`) matches when any element does. Values are "double-quoted", `backquoted`,
numbers, true/false or bare words. Pure: no I/O.
"""
from __future__ import annotations

import re
from typing import Any, Callable

Predicate = Callable[[Any], bool]


class FilterError(ValueError):
    pass


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)|(?P<op>==|!=|\(|\)|\[|\])|(?P<word>[^\s()\[\]"=!`]+))')
_KEYWORDS = {"and", "or", "not", "in", "contains", "matches", "is", "empty"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"filter {text!r}: cannot parse at position {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        if m.group("str") is not None:
            s = m.group("str")
            out.append(("str", bytes(s[1:-1], "utf-8").decode("unicode_escape") if s[0] == '"' else s[1:-1]))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            w = m.group("word")
            out.append(("kw" if w in _KEYWORDS else "word", w))
    return out


def _values(obj: Any, path: list[str]) -> list[Any]:
    """Every value the selector reaches (a list on the way fans out)."""
    cur = [obj]
    for part in path:
        nxt: list[Any] = []
        for c in cur:
            items = c if isinstance(c, list) else [c]
            for it in items:
                if isinstance(it, dict) and part in it:
                    nxt.append(it[part])
        cur = nxt
    return cur


def _eq(a: Any, lit: str) -> bool:
    if isinstance(a, bool):
        return str(a).lower() == lit.lower()
    if isinstance(a, (int, float)):
        try:
            return float(a) == float(lit)
        except ValueError:
            return False
    return a is not None and str(a) == lit


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str] | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise FilterError(f"filter {self.text!r}: ends too early")
        self.i += 1
        return t

    def expect(self, kind: str, value: str | None = None) -> str:
        t = self.take()
        if t[0] != kind or (value is not None and t[1] != value):
            raise FilterError(f"filter {self.text!r}: expected {value or kind}, found {t[1]!r}")
        return t[1]

    def at_kw(self, *words: str) -> bool:
        t = self.peek()
        return t is not None and t[0] == "kw" and t[1] in words

    def parse(self) -> Predicate:
        p = self.expr()
        if self.peek() is not None:
            raise FilterError(f"filter {self.text!r}: unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return p

    def expr(self) -> Predicate:
        terms = [self.term()]
        while self.at_kw("or"):
            self.take()
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else (lambda o, ts=terms: any(t(o) for t in ts))

    def term(self) -> Predicate:
        fs = [self.factor()]
        while self.at_kw("and"):
            self.take()
            fs.append(self.factor())
        return fs[0] if len(fs) == 1 else (lambda o, xs=fs: all(f(o) for f in xs))

    def factor(self) -> Predicate:
        if self.at_kw("not"):
            self.take()
            inner = self.factor()
            return lambda o: not inner(o)
        t = self.peek()
        if t == ("op", "("):
            self.take()
            e = self.expr()
            self.expect("op", ")")
            return e
        return self.match()

    def selector(self) -> list[str]:
        word = self.expect("word")
        path = [p for p in word.split(".") if p]
        while self.peek() == ("op", "["):
            self.take()
            path.append(self.expect("str"))
            self.expect("op", "]")
            t = self.peek()
            if t is not None and t[0] == "word" and t[1].startswith("."):
                self.take()
                path.extend(p for p in t[1].split(".") if p)
        return path

    def value(self) -> str:
        t = self.take()
        if t[0] not in ("str", "word"):
            raise FilterError(f"filter {self.text!r}: expected a value, found {t[1]!r}")
        return t[1]

    def match(self) -> Predicate:
        t0, t1 = self.peek(), self.peek(1)
        # `V in Sel` / `V not in Sel`
        t2 = self.peek(2)
        if t0 is not None and t0[0] in ("str", "word") and t1 is not None and (
                t1 == ("kw", "in") or (t1 == ("kw", "not") and t2 == ("kw", "in"))):
            lit = self.value()
            negate = False
            if self.at_kw("not"):
                self.take()
                negate = True
            self.expect("kw", "in")
            sel = self.selector()
            return lambda o: negate != any(_contains(v, lit) for v in _values(o, sel))
        sel = self.selector()
        t = self.take()
        if t == ("op", "=="):
            lit = self.value()
            return lambda o: any(_eq(v, lit) for v in _values(o, sel))
        if t == ("op", "!="):
            lit = self.value()
            return lambda o: not any(_eq(v, lit) for v in _values(o, sel))
        negate = False
        if t == ("kw", "not"):
            negate = True
            t = self.take()
        if t == ("kw", "contains"):
            lit = self.value()
            return lambda o: negate != any(_contains(v, lit) for v in _values(o, sel))
        if t == ("kw", "matches"):
            try:
                rx = re.compile(self.value())
            except re.error as e:
                raise FilterError(f"filter {self.text!r}: bad regular expression: {e}") from None
            return lambda o: negate != any(isinstance(v, str) and rx.search(v) is not None for v in _values(o, sel))
        if t == ("kw", "is") and not negate:
            if self.at_kw("not"):
                self.take()
                negate = True
            self.expect("kw", "empty")
            return lambda o: negate != all(_empty(v) for v in _values(o, sel))
        raise FilterError(f"filter {self.text!r}: unknown operator {t[1]!r}")


def _contains(container: Any, lit: str) -> bool:
    if isinstance(container, dict):
        return lit in container
    if isinstance(container, list):
        return any(_eq(x, lit) for x in container)
    if isinstance(container, str):
        return lit in container
    return False


def _empty(v: Any) -> bool:
    return v is None or (hasattr(v, "__len__") and len(v) == 0)


def compile_filter(text: str) -> Predicate:
    """A predicate over a JSON-shaped object; FilterError names the problem."""
    if not text.strip():
        return lambda o: True
    return _Parser(text).parse()
