"""Where tests find Bookinfo's routing files.

The project ships its own (`examples/bookinfo/`, written in Istio's format), so a clone alone is the whole
project. Istio's own sample files are third-party test input in `../shared/istio-samples/` (beside the
clone, in CI and in the developers' checkout): tests that check that *Istio's* files load and route
unchanged use them when they are there and are skipped, with this reason, when they are not.
"""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
OWN_BOOKINFO = EXAMPLES / "bookinfo"
OWN_NETWORKING = OWN_BOOKINFO / "networking"
ISTIO_BOOKINFO = ROOT.parent / "shared" / "istio-samples" / "bookinfo"
ISTIO_NETWORKING = ISTIO_BOOKINFO / "networking"
HAVE_ISTIO_SAMPLES = (ISTIO_NETWORKING / "destination-rule-all.yaml").is_file()
NO_ISTIO_SAMPLES = (f"Istio's Bookinfo samples are not beside this clone ({ISTIO_BOOKINFO}): "
                    f"this test checks that Istio's own files work unchanged")
needs_istio_samples = pytest.mark.skipif(not HAVE_ISTIO_SAMPLES, reason=NO_ISTIO_SAMPLES)

# Routing files for end-to-end runs: Istio's own when present (proving they work unchanged), else the
# project's copies in the same format, so the suite runs in full from a bare clone.
ROUTING = ISTIO_NETWORKING if HAVE_ISTIO_SAMPLES else OWN_NETWORKING
