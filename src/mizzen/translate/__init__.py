"""PURE translation: Snapshot × Proxy → Envoy xDS resources (xds-protos messages). No I/O.

`model/` says what the Istio resources mean (`model.Resolved`); this package only shapes Envoy messages: one
module per output (`listeners`, `routes`, `clusters`, `endpoints`), DestinationRule policy shapes in
`policies`, HTTP features behind one interface in `filters/`, EnvoyPatches in `patches`, and the consistency
check every rendered view passes in `consistency`. `Renderer` puts them together and shares what it can.
"""
from ..lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"Renderer": ".renderer", "render": ".renderer", "view_key": ".renderer"})

__all__ = ["Renderer", "render", "view_key"]
