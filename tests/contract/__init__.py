"""The storage contract suite: every engine must pass it."""
