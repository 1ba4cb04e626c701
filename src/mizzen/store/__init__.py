"""Config store: durable, atomic, watchable storage of validated resources."""
from .base import (Action, ApplyResult, Change, ConfigStore, HistoryCompacted, NotFound, RevisionConflict,
                   StoreUnavailable)
from .sqlite import SqliteStore

__all__ = ["Action", "ApplyResult", "Change", "ConfigStore", "HistoryCompacted", "NotFound", "RevisionConflict",
           "SqliteStore", "StoreUnavailable"]
