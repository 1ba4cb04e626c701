"""Shared fixtures of the local-runner tests: real namespaces and iptables need root."""
from __future__ import annotations

import os

import pytest

from mizzen.local import netns


def _netns_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: creates network namespaces and iptables rules"
    return netns.unavailable_reason()


requires_netns = pytest.mark.skipif(_netns_skip_reason() is not None,
                                    reason=f"netns unavailable: {_netns_skip_reason()}")
