"""Memory diagnostics for long runs: `MIZZEN_TRACEMALLOC=DIR` makes a control plane trace Python allocations
and write a tracemalloc snapshot plus live-object counts by type every `MIZZEN_TRACEMALLOC_EVERY` seconds
(default 300) to DIR/controlplane-<replica>-<n>.{snap,types.json}; `MIZZEN_TRACEMALLOC_FRAMES=0` writes the
object counts only (no tracing, so the process's RSS is not inflated by it).

Off unless asked: tracemalloc slows allocation-heavy code. Compare two snapshots with
`python -m mizzen.server.memdiag OLD.snap NEW.snap` (the top growth by allocation site). This is how the chaos
soak's control-plane growth is looked into (issue 16): RSS alone cannot say whether Python objects grow or the
allocator keeps freed pages.
"""
from __future__ import annotations

import collections
import gc
import json
import logging
import os
import sys
import threading
import tracemalloc
from pathlib import Path

log = logging.getLogger(__name__)


def _type_counts(top: int = 60) -> dict[str, int]:
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    return dict(counts.most_common(top))


def start_from_env(replica: int) -> threading.Event | None:
    """Start tracing and the snapshot thread if MIZZEN_TRACEMALLOC names a directory; returns its stop event."""
    out = os.environ.get("MIZZEN_TRACEMALLOC")
    if not out:
        return None
    every = float(os.environ.get("MIZZEN_TRACEMALLOC_EVERY", "300"))
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    frames = int(os.environ.get("MIZZEN_TRACEMALLOC_FRAMES", "8"))  # 0: object counts only (RSS stays honest)
    if frames > 0:
        tracemalloc.start(frames)
    stop = threading.Event()

    def loop() -> None:
        n = 0
        while True:
            base = d / f"controlplane-{replica}-{n:03d}"
            try:
                if frames > 0:
                    tracemalloc.take_snapshot().dump(str(base) + ".snap")
                base.with_suffix(".types.json").write_text(json.dumps(_type_counts(), indent=0))
            except OSError as e:
                log.warning("memory diagnostics: cannot write %s (%s); stopping them", base, e)
                return
            n += 1
            if stop.wait(every):
                return

    threading.Thread(target=loop, name="memdiag", daemon=True).start()
    log.warning("memory diagnostics on (MIZZEN_TRACEMALLOC=%s, every %.0f s): allocations are traced, which "
                "costs CPU; unset it for normal runs", out, every)
    return stop


def compare(old: str, new: str, top: int = 25) -> str:
    a, b = tracemalloc.Snapshot.load(old), tracemalloc.Snapshot.load(new)
    lines = [f"total traced: {sum(s.size for s in a.statistics('filename')) / 2**20:.1f} → "
             f"{sum(s.size for s in b.statistics('filename')) / 2**20:.1f} MiB"]
    for stat in b.compare_to(a, "traceback")[:top]:
        lines.append(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+7d} blocks  "
                     + " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in list(stat.traceback)[::-1][:6]))
    return "\n".join(lines)


if __name__ == "__main__":
    print(compare(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 25))
