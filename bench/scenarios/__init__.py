"""Scenarios: each module defines SCENARIO."""
