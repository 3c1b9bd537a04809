"""Shared test fixtures.

LONSCOPE_STRICT=1 (set by CI) turns "needs tshark / ../shared" skips into failures."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LONSCOPE_SHARED", ROOT.parent / "shared"))
STRICT = os.environ.get("LONSCOPE_STRICT") == "1"


def need_or_skip(ok: bool, reason: str) -> None:
    if ok:
        return
    if STRICT:
        pytest.fail(f"LONSCOPE_STRICT=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared() -> Path:
    need_or_skip(SHARED.is_dir(), f"../shared not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def vectors(shared):
    import json
    return json.loads((shared / "vectors" / "public-vectors.json").read_text())


@pytest.fixture(scope="session")
def pcaps(shared) -> Path:
    p = shared / "pcaps"
    need_or_skip(p.is_dir(), f"{p} not found")
    return p


@pytest.fixture(scope="session")
def tshark() -> str:
    path = shutil.which("tshark")
    need_or_skip(path is not None, "tshark is not installed (apt-get install tshark)")
    return path


@pytest.fixture(scope="session")
def lonscope_cmd() -> list[str]:
    """The real console script (installed by pip) or, failing that, the module."""
    exe = shutil.which("lonscope", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [exe] if exe else [sys.executable, "-m", "analyzer"]


# Hypothesis profiles: CI runs many more examples (HYPOTHESIS_PROFILE=ci set by .ci/run).
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=2000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=200, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
except ImportError:  # hypothesis is a test extra
    pass
