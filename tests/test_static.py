"""The layer rule (import-linter) and strict typing (mypy) hold over the source tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.static, pytest.mark.timeout(900)]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=880)


def test_import_contracts_are_kept() -> None:
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_mypy_strict_is_clean() -> None:
    result = _run(
        str(BIN / "mypy"),
        "--cache-dir",
        "/dev/null",
        "-p",
        "scheduler",
        "-p",
        "nodes",
        "-p",
        "policies",
    )
    assert result.returncode == 0, result.stdout[-6000:]


def test_ruff_is_clean() -> None:
    result = _run(str(BIN / "ruff"), "check", "scheduler", "nodes", "policies", "tests")
    assert result.returncode == 0, result.stdout[-6000:]
