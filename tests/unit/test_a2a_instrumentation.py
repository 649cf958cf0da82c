"""a2a-sdk's own spans are off in the hub unless the operator asks for them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import interlink.edges.a2a, a2a.utils.telemetry as t; print(t.otel_enabled)"


@pytest.mark.parametrize(("setting", "enabled"), [(None, "False"), ("true", "True")])
def test_a2a_sdk_spans_are_off_unless_asked_for(setting: str | None, enabled: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"}
    if setting is not None:
        env["OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == enabled
