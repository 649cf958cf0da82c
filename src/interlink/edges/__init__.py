"""Edges translate outside input into envelopes for the gate, and the gate's verdicts back.
They make no security decision of their own."""

import os

# a2a-sdk wraps its request handling in OpenTelemetry spans of its own whenever OpenTelemetry
# is installed (the hub installs it for its span per crossing). Those spans repeat what the
# gate's span already says, and even unrecorded they cost about a sixth of an A2A request's
# time at the edge. Off unless the operator asks for them (set it to `true`); a plain a2a-sdk
# install, without OpenTelemetry, runs the same way. Read by a2a-sdk when first imported.
os.environ.setdefault("OTEL_INSTRUMENTATION_A2A_SDK_ENABLED", "false")
