"""CI's rule: with CI=true a test that would skip because a real component is missing fails instead."""

from __future__ import annotations

import os

import pytest

#: Words that mark a skip as a missing real component; in CI (CI=true) such a skip is a failure.
COMPONENTS = ("chromium", "redis-server", "redis-cli", "postgresql", "initdb", "pg_ctl", "psycopg", "node", "npm",
              "playwright")


def missing_component(reason: str) -> str | None:
    """Return the real component a skip's reason names as missing, if any."""
    lowered = reason.lower()
    return next((name for name in COMPONENTS if name in lowered), None)


def in_ci() -> bool:
    """Tell whether the run is CI's (CI=true)."""
    return os.environ.get("CI", "").lower() == "true"


def fail_instead_of_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """In CI, turn a skip for a missing real component into a failure that names it."""
    if not (in_ci() and report.skipped):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    component = missing_component(reason)
    if component is not None:
        report.outcome = "failed"
        report.longrepr = f"CI=true and {component} is missing, so this test cannot run: {reason}"
