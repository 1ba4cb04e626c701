"""Typed resource schemas, YAML loading and validation with field paths."""

from ..lazy import lazy_exports

_EXPORTS = {
    'DEFAULT_NAMESPACE': '.base',
    'InvalidConfig': '.base',
    'Issue': '.base',
    'Metadata': '.base',
    'Resource': '.base',
    'ResourceKey': '.base',
    'KINDS': '.kinds',
    'resolve_kind': '.kinds',
    'LoadResult': '.load',
    'from_dict': '.load',
    'load_sources': '.load',
    'load_text': '.load',
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["DEFAULT_NAMESPACE", "InvalidConfig", "Issue", "Metadata", "Resource", "ResourceKey", "KINDS",
           "resolve_kind", "LoadResult", "from_dict", "load_sources", "load_text"]
