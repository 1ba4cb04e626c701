"""Service registry: the running instances (replicas) the mesh routes to."""
from .base import Registry
from .embedded import EmbeddedRegistry

__all__ = ["Registry", "EmbeddedRegistry"]
