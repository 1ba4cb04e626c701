"""Fixtures shared by the rate-limit tests."""
from __future__ import annotations

import shutil
import tempfile

import pytest


@pytest.fixture
def workdir():
    """A temp dir for one test's processes (configs, logs, sockets), removed afterwards."""
    d = tempfile.mkdtemp(prefix="mizzen-rl-")
    yield d
    shutil.rmtree(d, ignore_errors=True)
