"""Shared fixtures: paths of the bundled samples and of the reference data in ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("tests.support.kube", "tests.support.prometheus")
"""Shared fixtures: ``emulator`` (a Kubernetes API emulator), ``vllm_fleet`` and ``prometheus``."""

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "config" / "samples"
REFERENCE = REPO.parent / "shared" / "reference" / "inferno-sample-data"


@pytest.fixture
def reference() -> Path:
    """The predecessor's sample data sets; the test is skipped where ../shared is absent."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE} (../shared is absent)")
    return REFERENCE
