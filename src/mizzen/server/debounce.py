"""The asyncio driver of the sans-I/O `xds.PushQueue`: sleep until the queue is due, then flush."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from ..xds.pushqueue import PushEvent, PushQueue


async def run_debounced(queue: PushQueue, wake: asyncio.Event, flush: Callable[[PushEvent], None]) -> None:
    """Forever: wait for events (`wake` is set after each `queue.add`), honour the quiet period and the
    max wait, and call `flush` with the merged event. Cancel the task to stop."""
    while True:
        deadline = queue.next_deadline()
        if deadline is None:
            await wake.wait()
            wake.clear()
            continue
        delay = deadline - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(wake.wait(), delay)
                wake.clear()
                continue  # more events: recompute the deadline
            except asyncio.TimeoutError:
                pass
        if queue.due(time.monotonic()):
            ev = queue.take()
            if ev is not None:
                flush(ev)
