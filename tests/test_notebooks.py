"""What `dvc repro` prints while a notebook stage runs: one live progress line, the rest as the kernel wrote it."""

import io
import json

import pytest

from stm import notebooks, paths
from stm.paths import Layout
from stm.notebooks import LiveStream


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_a_progress_bar_is_one_live_line():
    out = Terminal()
    s = LiveStream(out)
    s.write("INFO stm: start\n\rtrain 0/40")
    s.write("\rtrain 10/40\rtrain 20/40")  # the kernel batches redraws: only the last is drawn
    s.write("\rtrain 40/40\n")
    s.write("UserWarning: a real warning\n")
    assert out.getvalue() == ("INFO stm: start\n\rtrain 0/40\x1b[K\rtrain 20/40\x1b[K\rtrain 40/40\x1b[K\n"
                              "UserWarning: a real warning\n")


def test_off_a_terminal_the_bar_is_printed_every_so_often_and_its_last_state_always():
    out, now = io.StringIO(), [0.0]
    s = LiveStream(out, every=30, clock=lambda: now[0])
    for step in range(1, 41):  # a 40-step training, one redraw a second
        now[0] = float(step)
        s.write(f"\rtrain {step}/40")
    s.write("\n")
    s.write("text between bars\n\rscore 1/2")
    s.write("plain text ends the bar\n")
    lines = out.getvalue().splitlines()
    assert lines == ["train 1/40", "train 31/40", "train 40/40", "text between bars", "score 1/2",
                     "plain text ends the bar"]


@pytest.mark.slow
def test_a_notebook_stage_prints_no_papermill_warning_per_progress_refresh(tmp_path, monkeypatch, capfd):
    """A real kernel with a tqdm loop of 200 redraws: the stage prints a handful of lines, none of them
    `WARNING papermill:`, and the executed notebook lands in the run's reports folder."""
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "n = 2", "outputs": [],
                     "execution_count": None},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": "import time\nfrom tqdm import tqdm\nfor _ in tqdm(range(200), mininterval=0):\n"
                               "    time.sleep(0.001)\nprint('done', n)"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "99_probe.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(paths, "NOTEBOOKS", tmp_path / "nb")
    out = notebooks.execute(Layout("p", "b", tmp_path), "99_probe", {"n": 3})
    printed = capfd.readouterr()
    assert out == tmp_path / "reports" / "p" / "b" / "99_probe.ipynb" and out.with_suffix(".html").exists()
    assert "done 3" in printed.out
    page = out.with_suffix(".html").read_text(encoding="utf-8")  # a page of its own, without the lab stylesheet
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page and "done 3" in page
    assert "--jp-" not in page and len(page.encode()) < 100_000  # the lab template alone inlines ~280 KB
    assert "WARNING papermill" not in printed.err
    bars = [line for line in printed.err.splitlines() if "/200" in line]
    assert 1 <= len(bars) <= 3, printed.err[-2000:]


def test_an_executed_report_names_no_path_of_this_machine(tmp_path):
    """Reports are committed: a warning that names a file of the environment is written relative to the repository,
    and papermill's timestamps are dropped."""
    warning = f"{paths.ROOT}/.venv/lib/python3.11/site-packages/transformers/modeling_utils.py:3312: FutureWarning"
    nb = {"cells": [{"cell_type": "code", "source": "x", "execution_count": 1,
                     "metadata": {"papermill": {"duration": 1.5}, "execution": {"iopub.status.busy": "2026"}},
                     "outputs": [{"output_type": "stream", "name": "stderr", "text": [warning]}]}],
          "metadata": {"papermill": {"start_time": "2026-12-06T00:00", "duration": 3.0, "parameters": {"e": 1},
                                     "input_path": f"{paths.ROOT}/notebooks/03_train.ipynb"}},
          "nbformat": 4, "nbformat_minor": 5}
    out = tmp_path / "r.ipynb"
    out.write_text(json.dumps(nb))
    notebooks.portable_report(out)
    text = out.read_text()
    assert str(paths.ROOT) not in text and ".venv/lib/python3.11/site-packages/transformers" in text
    data = json.loads(text)
    assert data["metadata"]["papermill"] == {"parameters": {"e": 1}} and data["cells"][0]["metadata"] == {}


@pytest.mark.parametrize("path", sorted((paths.ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_source_notebook_is_valid_nbformat_without_outputs(path):
    """Every cell has an id (nbformat 4.5: a missing one is a warning today, an error tomorrow) and no output."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5)
    assert all(c.get("id") for c in nb["cells"]), [i for i, c in enumerate(nb["cells"]) if not c.get("id")]
    assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
