"""PURE translation: Snapshot × Proxy → Envoy xDS resources (xds-protos messages). No I/O."""
from .renderer import Renderer, render, view_key

__all__ = ["Renderer", "render", "view_key"]
