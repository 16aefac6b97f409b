"""Run a companion notebook with papermill (parameters injected) and render it to HTML.

The source notebooks in ``notebooks/`` are committed without outputs; executed copies and their HTML
renderings are written to ``reports/`` as DVC outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stm import paths


def execute(name: str, parameters: dict | None = None, suffix: str = "") -> Path:
    import papermill as pm

    src = paths.NOTEBOOKS / f"{name}.ipynb"
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such notebook")
    paths.REPORTS.mkdir(parents=True, exist_ok=True)  # DVC does not create output folders
    out = paths.REPORTS / f"{name}{suffix}.ipynb"
    # papermill relays every progress-bar refresh of the kernel as a log line (thousands for one training):
    # the kernel inherits this, so tqdm refreshes at most every 30 s
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    pm.execute_notebook(str(src), str(out), parameters=parameters or {}, kernel_name="python3",
                        cwd=str(paths.ROOT), progress_bar=False, log_output=True)
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--log-level", "WARN", str(out)],
                   check=True)
    return out
