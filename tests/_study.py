"""Dry runs of the study scripts (scripts/experiment.sh, scripts/small_budget.sh): the steps they would run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def plan(script: str, run: Path, data: Path, **env: str) -> subprocess.CompletedProcess:
    """``DRY_RUN=1 bash scripts/<script>`` with RUN, DATA, ASSETS and this interpreter's BIN, whatever its exit."""
    environment = {
        **os.environ,
        "DRY_RUN": "1",
        "RUN": str(run),
        "DATA": str(data),
        "ASSETS": str(run.parent),
        "BIN": str(Path(sys.executable).parent),
        **env,
    }
    return subprocess.run(["bash", str(SCRIPTS / script)], env=environment, capture_output=True, text=True, timeout=120)


def dry_run(script: str, run: Path, data: Path, **env: str) -> list[str]:
    """The printed lines of a plan that must succeed."""
    result = plan(script, run, data, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()
