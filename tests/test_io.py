import json

import pytest

from stm.core.beir import read_beir, write_beir
from stm.data.schema import read_triples
from stm.io import DataError, atomic_path, write_jsonl

GOOD = {"id": "a", "split": "nlu", "instruction": "i", "query": "q", "positive": "p", "negative": "n"}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("lines,match", [
    ([json.dumps(GOOD), "{not json"], r":2: malformed JSON"),
    ([json.dumps({k: v for k, v in GOOD.items() if k != "positive"})], r":1: missing field\(s\) \['positive'\]"),
    ([json.dumps(GOOD | {"query": "  "})], r":1: empty field\(s\) \['query'\]"),
    ([json.dumps(GOOD), json.dumps(GOOD)], r"duplicate id 'a' \(rows 1 and 2\)"),
    (["[1, 2]"], r":1: expected a JSON object"),
    ([""], r"no triples \(empty split\)"),
])
def test_bad_triple_files_name_file_and_line(tmp_path, lines, match):
    path = _write(tmp_path / "split.jsonl", lines)
    with pytest.raises(DataError, match=match) as err:
        read_triples(path)
    assert str(path) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_triples(tmp_path / "nope.jsonl")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == '{"a": 1}\n'  # the old complete file survives
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_beir_roundtrip_and_errors(tmp_path):
    folder = write_beir(tmp_path / "t", {"d1": "text one", "d2": "text two"}, {"q1": "query"}, {"q1": {"d2": 1}}, "test",
                        {"instruction": "find"})
    data = read_beir(folder, "test")
    assert data.qrels == {"q1": {"d2": 1}} and data.corpus["d1"] == "text one"
    with (folder / "qrels" / "test.tsv").open("a") as f:
        f.write("q1\td9\t1\n")
    with pytest.raises(DataError, match=r"test.tsv:3: unknown document id 'd9'"):
        read_beir(folder, "test")
    with pytest.raises(DataError, match="no qrels for split 'dev'"):
        read_beir(folder, "dev")
    _write(folder / "corpus.jsonl", ['{"_id": "d1", "text": ""}'])
    with pytest.raises(DataError, match=r"corpus.jsonl:1: document 'd1' has no text"):
        read_beir(folder, "test")


def test_setup_environment_leaves_the_hub_reachable():
    """The paper profile reads the hub: setting up the environment must not force HF_HUB_OFFLINE (it did)."""
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "HF_HUB_OFFLINE"}
    code = "import os; from stm.paths import setup_environment; setup_environment(); print(os.environ.get('HF_HUB_OFFLINE'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None"


def test_a_jsonl_line_that_is_not_utf8_names_file_and_line(tmp_path):
    import pytest

    from stm.io import DataError, read_jsonl

    f = tmp_path / "rows.jsonl"
    f.write_bytes(b'{"query": "ok"}\n{"query": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: not UTF-8"):
        read_jsonl(f)


def test_the_resume_log_keeps_its_rows_across_a_kill_and_forgets_other_inputs(tmp_path):
    """The one resume cache: rows by key, a torn last line skipped and cut, rows of another fingerprint ignored."""
    from stm.io import ResumeLog

    path = tmp_path / "log.jsonl"
    log = ResumeLog(path, key="candidate", fingerprint="a")
    log.append([{"candidate": "x", "score": 1.0}, {"candidate": "y", "score": 2.0}])
    with path.open("a") as f:
        f.write('{"fingerprint": "a", "candidate": "z", "sco')  # killed mid-write
    again = ResumeLog(path, key="candidate", fingerprint="a")
    assert {k: r["score"] for k, r in again.rows.items()} == {"x": 1.0, "y": 2.0}
    again.append([{"candidate": "z", "score": 3.0}])
    assert path.read_text().count("\n") == 3 and path.read_text().endswith('"score": 3.0}\n')
    assert set(ResumeLog(path, key="candidate", fingerprint="a").rows) == {"x", "y", "z"}
    assert ResumeLog(path, key="candidate", fingerprint="b").rows == {}  # computed from other inputs
