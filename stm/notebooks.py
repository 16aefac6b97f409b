"""Run a companion notebook with papermill (parameters injected) and render it to HTML.

The source notebooks in ``notebooks/`` are committed without outputs; executed copies and their HTML renderings
are written as DVC outputs to ``reports/<profile>/`` (the data notebooks, shared by every backbone) or
``reports/<profile>/<backbone>/`` (the rest). While a notebook runs, its output reaches the terminal as the kernel
wrote it: a progress bar is one live line, everything else passes as printed (no log-level prefix).
"""

from __future__ import annotations

import io
import os
import re
import sys
import time
from pathlib import Path

from stm import paths
from stm.config import ConfigError
from stm.paths import Layout

PROFILE_NOTEBOOKS = ("00_data", "01_synthesis")  # per profile: their outputs do not depend on the backbone


def report_dir(layout: Layout, name: str) -> Path:
    return layout.profile_reports if name in PROFILE_NOTEBOOKS else layout.reports


class LiveStream(io.TextIOBase):
    """A kernel stream relayed to ``out``. tqdm redraws its bar with a carriage return: on a terminal that stays one
    live line; elsewhere (a CI log, a file) the bar is printed at most every ``every`` seconds, and its last state
    always. Text without a carriage return passes unchanged."""

    def __init__(self, out=None, every: float = 30.0, clock=time.monotonic):
        self.out, self.every, self.clock = out or sys.stderr, every, clock
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.on_bar = False  # the current line is a progress bar
        self.pending = ""  # off a terminal: the bar's latest state, not printed yet
        self.shown_at = float("-inf")

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for piece in re.split(r"(\n)", text):
            if "\r" in piece:  # a redraw: only its last non-empty state counts
                self._bar(next((p for p in reversed(piece.split("\r")) if p), ""))
            elif piece == "\n":  # ends the bar's line, or is a plain newline
                self._close_bar() if self.on_bar else self.out.write(piece)
            elif piece:
                self._close_bar()
                self.out.write(piece)
        self.out.flush()
        return len(text)

    def _bar(self, line: str) -> None:
        self.on_bar = True
        if self.tty:
            self.out.write("\r" + line + "\x1b[K")
        elif self.clock() - self.shown_at >= self.every:
            self.out.write(line + "\n")
            self.shown_at, self.pending = self.clock(), ""
        else:
            self.pending = line

    def _close_bar(self) -> None:
        if self.on_bar:
            self.out.write("\n" if self.tty else (self.pending + "\n" if self.pending else ""))
        self.on_bar, self.pending = False, ""


def execute(layout: Layout, name: str, parameters: dict | None = None, suffix: str = "") -> Path:
    """Run ``notebooks/<name>.ipynb`` for the run ``layout`` (its ``profile`` and ``backbone`` parameters), writing
    the executed copy and its HTML to the run's reports folder."""
    # papermill -> nbformat -> jsonschema imports rfc3987_syntax when it is installed (jupyterlab's extras bring it),
    # which builds an Earley parser of the IRI grammar at import: 1.45 s of this process's 3.0 s of imports (AMD EPYC
    # Zen 4, `python -X importtime`), paid by every notebook stage, for a format nbformat never checks. Unimportable,
    # jsonschema leaves that format unchecked, as it does wherever the package is not installed.
    sys.modules.setdefault("rfc3987_syntax", None)
    import papermill as pm

    src = paths.NOTEBOOKS / f"{name}.ipynb"
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such notebook")
    known = pm.inspect_notebook(str(src))
    unknown = sorted(set(parameters or {}) - set(known))
    if unknown:
        raise ConfigError(f"{src}: no parameter(s) {unknown} in its parameters cell; it has {sorted(known)}")
    # the run is the notebook's parameters: it builds its own Run from them (stm.config.Run.of)
    parameters = {k: v for k, v in (("profile", layout.profile), ("backbone", layout.backbone)) if k in known} | dict(
        parameters or {})
    reports = report_dir(layout, name)
    reports.mkdir(parents=True, exist_ok=True)  # DVC does not create output folders
    out = reports / f"{name}{suffix}.ipynb"
    os.environ.setdefault("TQDM_MININTERVAL", "5")  # the kernel inherits it: the saved notebook keeps few redraws
    # the streams go to the terminal as the kernel wrote them (papermill's log_output would turn every refresh
    # of a progress bar into its own `WARNING papermill:` line: thousands for one training)
    pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name="python3",
                        cwd=str(paths.ROOT), progress_bar=False, log_output=False,
                        stdout_file=LiveStream(sys.stdout), stderr_file=LiveStream(sys.stderr))
    portable_report(out)
    render_html(out)
    return out


# A report page: nbconvert's `basic` template (cells, outputs, figures inline) in a few lines of CSS. The default lab
# template inlines a ~280 KB stylesheet into every report (04_merge: 404 KB, 115 KB this way), the same in all 13.
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>
body {{ max-width: 1100px; margin: 2em auto; font: 15px/1.5 system-ui, sans-serif; color: #222; }}
pre, code {{ font: 13px/1.4 ui-monospace, monospace; }} .input_area pre {{ background: #f6f8fa; padding: .6em; }}
.prompt {{ display: none; }} img {{ max-width: 100%; }} .output_subarea pre {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 13px; }} th, td {{ border: 1px solid #ddd; padding: 2px 8px; }}
</style></head><body>
{body}
</body></html>
"""


def render_html(nb: Path) -> Path:
    """``<report>.html`` beside an executed notebook, readable in any browser without running anything."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nbformat.read(nb, as_version=4))
    out = nb.with_suffix(".html")
    out.write_text(PAGE.format(title=nb.stem, body=body), encoding="utf-8")
    return out


def portable_report(nb: Path) -> None:
    """The executed notebook as committed: paths of this machine (warnings name files in the environment) written
    relative to the repository, and papermill's timestamps dropped, so a rerun on another machine differs only where
    the numbers do."""
    import json

    data = json.loads(nb.read_text(encoding="utf-8"))
    run = data.get("metadata", {}).get("papermill", {})
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        run.pop(key, None)
    for cell in data.get("cells", []):
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    root = str(paths.ROOT)
    for prefix in (root + "/", root):
        text = text.replace(json.dumps(prefix)[1:-1], "" if prefix.endswith("/") else ".")
    nb.write_text(text, encoding="utf-8")
