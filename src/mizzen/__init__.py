"""Mizzen: a service mesh with a Python control plane and Envoy sidecars."""
