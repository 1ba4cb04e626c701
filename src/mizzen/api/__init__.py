"""Typed resource schemas, YAML loading and validation with field paths."""
from .base import DEFAULT_NAMESPACE, InvalidConfig, Issue, Metadata, Resource, ResourceKey
from .kinds import KINDS, resolve_kind
from .load import LoadResult, from_dict, load_sources, load_text

__all__ = ["DEFAULT_NAMESPACE", "InvalidConfig", "Issue", "Metadata", "Resource", "ResourceKey", "KINDS",
           "resolve_kind", "LoadResult", "from_dict", "load_sources", "load_text"]
