"""Benchmarks (never pass/fail): `mizzen bench xds` drives a real control plane with many ADS streams."""
