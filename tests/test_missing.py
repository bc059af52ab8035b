"""CI's rule, through pytest itself: a skip for a missing real component fails with CI=true, and only then."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

#: A test module that skips as the suite's tests do when a component is missing, and once for another reason.
SKIPPING = '''
import pytest

def test_needs_chromium():
    pytest.skip("chromium is missing: /usr/bin/chromium is not installed")

def test_needs_redis():
    pytest.skip("redis-server is not on PATH")

def test_skipped_by_choice():
    pytest.skip("this platform has no such feature")
'''


def run(tmp_path, ci: str) -> subprocess.CompletedProcess:
    """Run the skipping module under the suite's conftest (copied beside it) with CI set as given."""
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\nfrom missing import fail_instead_of_skip\n"
        "import pytest\n\n"
        "@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n    fail_instead_of_skip(outcome.get_result())\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path, env={"CI": ci, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_skip_for_a_missing_component_fails_in_ci_only(tmp_path, ci):
    """With CI=true the skips naming chromium and redis-server fail, naming them; another skip stays a skip."""
    finished = run(tmp_path, ci)
    if ci:
        assert finished.returncode == 1, finished.stdout
        assert "CI=true and chromium is missing" in finished.stdout
        assert "CI=true and redis-server is missing" in finished.stdout
        assert "1 skipped" in finished.stdout
    else:
        assert finished.returncode == 0, finished.stdout
        assert "3 skipped" in finished.stdout
