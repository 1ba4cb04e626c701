"""Reading manifest files from disk (kept out of the pure `api` layer)."""
from __future__ import annotations

from typing import Iterable

from .api import DEFAULT_NAMESPACE, InvalidConfig, Issue, LoadResult, load_sources


def load_files(paths: Iterable[str], *, default_namespace: str = DEFAULT_NAMESPACE) -> LoadResult:
    """Read and load several files as one all-or-nothing input; unreadable files are reported as issues."""
    sources: list[tuple[str, str]] = []
    errors: list[Issue] = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                sources.append((p, f.read()))
        except (OSError, UnicodeDecodeError) as e:
            errors.append(Issue(f"cannot read: {getattr(e, 'strerror', None) or e}", p))
    if errors:
        raise InvalidConfig(errors)
    return load_sources(sources, default_namespace=default_namespace)
