"""Edges translate outside input into envelopes for the gate, and the gate's verdicts back.
They make no security decision of their own."""
