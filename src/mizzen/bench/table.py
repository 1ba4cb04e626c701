"""One row of the issue-15 goals table and the table's markdown (bench/goals.py, bench/scale.py)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class Row:
    goal: str
    target: str
    figure: list[float]
    baseline: list[float]
    fmt: str = ".2f"
    limit: float | None = None  # met when the median figure is <= limit
    note: str = ""  # the baseline's name
    # a goal on the ratio to the baseline (e.g. "≤ 1.05× bare Envoys"): met when the median ratio is within these
    max_ratio: float | None = None
    min_ratio: float | None = None

    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.figure, self.baseline) if y and x == x and y == y]

    def met(self) -> str:
        if self.max_ratio is not None or self.min_ratio is not None:
            rs = self.ratios()
            if not rs:
                return "-"
            m = statistics.median(rs)
            ok = (self.max_ratio is None or m <= self.max_ratio) and (self.min_ratio is None or m >= self.min_ratio)
            return "yes" if ok else "no"
        if self.limit is None or not self.figure:
            return "-"
        return "yes" if statistics.median(self.figure) <= self.limit else "no"


def _spread(xs: list[float], fmt: str) -> str:
    xs = [x for x in xs if x == x]
    if not xs:
        return "-"
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.median(xs), fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def table(rs: list[Row]) -> str:
    lines = ["| goal | target | Mizzen | baseline (same run) | baseline | ratio Mizzen/baseline | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rs:
        ratios = r.ratios()
        lines.append(f"| {r.goal} | {r.target} | {_spread(r.figure, r.fmt)} | {_spread(r.baseline, r.fmt)} | "
                     f"{r.note or '-'} | {_spread(ratios, '.2f')} | {r.met()} |")
    return "\n".join(lines)


__all__ = ["Row", "table"]
