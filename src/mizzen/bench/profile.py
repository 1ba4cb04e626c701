"""Sampling profiles of a running process for the benchmarks: py-spy (PyPI `py-spy`) when it is installed.

    p = Sampler.start(pid, "/tmp/prof/changes.txt")   # None when py-spy is not installed
    ...                                               # the phase to profile
    p.stop()                                          # SIGINT: py-spy writes its collapsed stacks
    print(top_entries("/tmp/prof/changes.txt", 15))  # self and inclusive shares of the samples

The raw output is py-spy's collapsed-stack format ("frame;frame;frame count" per line); `top_entries` reads it
without other tools.  Sampling costs the profiled process nothing (py-spy reads its memory from outside), but
py-spy itself takes CPU on this shared machine: profile in a separate run from the one whose figures you quote.
"""
from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys

__all__ = ["Sampler", "py_spy", "top_entries"]


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH (None: not installed)."""
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.access(here, os.X_OK) else shutil.which("py-spy")


class Sampler:
    def __init__(self, proc: subprocess.Popen, out: str) -> None:
        self.proc, self.out = proc, out

    @classmethod
    def start(cls, pid: int, out: str, rate: int = 250) -> "Sampler | None":
        exe = py_spy()
        if exe is None:
            return None
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        log = open(out + ".log", "wb")
        proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                 "--nonblocking", "-o", out], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return cls(proc, out)

    def stop(self, timeout: float = 20.0) -> str:
        """Stop sampling; returns the path of the collapsed stacks (may be missing if py-spy failed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.out


def _short(frame: str) -> str:
    """`fn (path/to/mizzen/xds/stream.py:68)` -> `fn (mizzen/xds/stream.py:68)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


def top_entries(path: str, k: int = 15, skip: tuple[str, ...] = ()) -> str:
    """Markdown: the k frames with the largest self share and the k with the largest inclusive share
    (frames whose text contains one of `skip` are left out of the inclusive list: event-loop plumbing)."""
    self_c: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    try:
        with open(path) as f:
            for line in f:
                line = line.rstrip()
                if not line or " " not in line:
                    continue
                stack, _, n = line.rpartition(" ")
                try:
                    count = int(n)
                except ValueError:
                    continue
                frames = [_short(x) for x in stack.split(";")]
                total += count
                self_c[frames[-1]] += count
                for fr in set(frames):
                    incl[fr] += count
    except FileNotFoundError:
        return f"(no profile: {path} missing; see {path}.log)"
    if not total:
        return "(no samples)"
    rows = ["| self % | frame |", "|---|---|"]
    rows += [f"| {c / total * 100:.1f} | `{fr}` |" for fr, c in self_c.most_common(k)]
    rows += ["", "| inclusive % | frame |", "|---|---|"]
    shown = [(fr, c) for fr, c in incl.most_common() if not any(s in fr for s in skip)][:k]
    rows += [f"| {c / total * 100:.1f} | `{fr}` |" for fr, c in shown]
    return f"{total} samples\n\n" + "\n".join(rows)
