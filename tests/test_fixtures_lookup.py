"""The reference fixtures are found at ``$YOLOJAX_FIXTURES``, else ``../shared/fixtures``; under CI (``CI=true``) a
missing fixture directory fails the run instead of letting the parity tests skip."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from conftest import fixtures_location, in_ci

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_environment_variable_wins_over_the_sibling_directory(tmp_path):
    assert fixtures_location({"YOLOJAX_FIXTURES": str(tmp_path)}) == tmp_path
    assert fixtures_location({"YOLOJAX_FIXTURES": ""}) == REPO.parent / "shared" / "fixtures"
    assert fixtures_location({}) == REPO.parent / "shared" / "fixtures"
    assert in_ci({"CI": "true"}) and in_ci({"CI": "1"}) and not in_ci({}) and not in_ci({"CI": "false"})


def _pytest(env: dict) -> subprocess.CompletedProcess:
    """This file's first test in a fresh pytest with ``env`` (what a CI job would run)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "environment_variable_wins"], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, **env})


def test_ci_fails_without_fixtures_and_runs_with_them(tmp_path):
    missing = _pytest({"CI": "true", "YOLOJAX_FIXTURES": str(tmp_path / "missing")})
    assert missing.returncode != 0
    assert f"CI=true: reference fixtures not found at {tmp_path / 'missing'}" in missing.stdout + missing.stderr
    present = _pytest({"CI": "true", "YOLOJAX_FIXTURES": str(tmp_path)})
    assert present.returncode == 0, present.stdout + present.stderr
