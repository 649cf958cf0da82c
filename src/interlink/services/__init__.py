"""Services behind the gate: registry, calls, audit. They use only the store contract and
never re-check what the gate decided."""
