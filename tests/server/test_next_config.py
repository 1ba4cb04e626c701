"""The control plane's config index follows the real store through its change log (incremental), and falls
back to a whole rebuild when the log no longer reaches back."""
from __future__ import annotations

from pathlib import Path

import pytest

from mizzen.api import load_text
from mizzen.model import ConfigIndex
from mizzen.server.controlplane import next_config
from mizzen.store.base import HistoryCompacted
from mizzen.store.sqlite import SqliteStore
from tests.model.test_incremental_index import DOCS, tables


def docs(*names: str):
    return [r for n in names for r in load_text(DOCS[n]).resources]


def test_index_follows_the_store_through_its_change_log(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", history=3)
    store.apply(docs("svc-a", "svc-b", "vs-b", "sidecar"))
    index = ConfigIndex(store.list(), store.revision)
    store.apply(docs("dr-a", "vs-a", "vs-d"))
    store.delete([docs("sidecar")[0].key])
    nxt = next_config(store, index)
    assert nxt.revision == store.revision and tables(nxt) == tables(ConfigIndex(store.list(), store.revision))
    assert nxt.services is index.services  # no Service changed: the table is shared, not rebuilt
    assert next_config(store, nxt) is nxt  # nothing new
    for name in ("svc-a2", "router", "web-svc", "telemetry"):  # 4 revisions: more than the log keeps
        store.apply(docs(name))
    with pytest.raises(HistoryCompacted):
        store.changes_since(nxt.revision)
    again = next_config(store, nxt)  # so: rebuilt whole
    assert tables(again) == tables(ConfigIndex(store.list(), store.revision))
    store.close()
