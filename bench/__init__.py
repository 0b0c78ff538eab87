"""valley: the Crowded-Valley optimizer benchmark harness (run loop, tuning, records, analysis, CLI)."""

PROTOCOL_VERSION = "1"
"""Bumped whenever a change alters what a run computes; it is part of every run_id."""
