"""Magic lines with a trailing `# comment` (as users write them), and the runs table's
message when a filter matches nothing: in a real kernel, plus the comment rule itself."""

from __future__ import annotations

import shlex

import pytest
from capture_helpers import execute, make_nb, outputs_text, query, use_store
from hypothesis import given
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.magics.comments import strip_comment

pytestmark = pytest.mark.timeout(180)

LOAD = "%load_ext mlops_jupyter"


def test_every_magic_line_accepts_a_trailing_comment(tmp_path, monkeypatch):
    store = use_store(monkeypatch, tmp_path)
    path = tmp_path / "nb.ipynb"
    cells = [
        LOAD,  # 0
        "%mlops_status  # anything running?",  # 1
        "%mlops_runs  # nothing yet",  # 2
        '%mlops_run start "run #1" --no-live -t note=a#b -t "why=a # b" -p n=5#6  # go',  # 3
        "lr = 0.1",  # 4
        "%mlops_status  # during the run",  # 5
        "%mlops_run end  # done",  # 6
        "%mlops_runs  # the table",  # 7
        "%%mlops_run cellrun --no-live  # the cell form too\nk = 2",  # 8
        "import polars as pl\ndf = pl.DataFrame({'a': [1, 2, 3]})",  # 9
        "%mlops_version df -n tbl  # version it",  # 10
        "%mlops_telemetry --stop  # no panels open",  # 11
        "%mlops_export nb.ipynb -o pipe  # export this notebook",  # 12
    ]
    nb = make_nb(cells, path)
    execute(nb, tmp_path, allow_errors=True)
    texts = [outputs_text(c) for c in nb.cells]
    for i, text in enumerate(texts):
        assert "UsageError" not in text and "Error" not in text, (i, text)
    assert "no active run" in texts[1]
    assert "no runs yet" in texts[2]
    assert "run 'run #1'" in texts[5]
    assert "ended: finished" in texts[6]
    assert "run #1" in texts[7]
    assert (tmp_path / "pipe").is_dir()
    (uid,) = query(store, "SELECT uid FROM runs WHERE name='run #1'")[0]
    run = mj.get_run(uid)
    assert run["status"] == "finished"
    assert run["tags"]["note"] == "a#b"  # `#` inside a word is not a comment
    assert run["tags"]["why"] == "a # b"  # nor inside quotes
    assert run["params"]["n"] == "5#6"  # text, not the number 5 and a comment
    (uid,) = query(store, "SELECT uid FROM runs WHERE name='cellrun'")[0]
    assert mj.get_run(uid)["params"] == {"k": 2}
    assert query(store, "SELECT count(*) FROM data_versions WHERE name='tbl'") == [(1,)]


def test_runs_filter_without_match_says_so(tmp_path, monkeypatch):
    use_store(monkeypatch, tmp_path)
    nb = make_nb(
        [
            LOAD,
            "%mlops_runs --status failed",  # empty store
            "%%mlops_run ok --no-live\nx = 1",
            "%mlops_runs --status failed",
            "%mlops_runs -e missing --status finished",
            "%mlops_runs --status finished",
        ]
    )
    execute(nb, tmp_path)
    texts = [outputs_text(c) for c in nb.cells]
    assert "no run matches --status failed" in texts[1]
    assert "no run matches --status failed" in texts[3]
    assert "no runs yet" not in texts[3]
    assert "no run matches --experiment missing --status finished" in texts[4]
    assert "ok" in texts[5] and "finished" in texts[5]


def test_strip_comment_cases():
    assert strip_comment("end  # done") == "end"
    assert strip_comment("# only a comment") == ""
    assert strip_comment("") == ""
    assert strip_comment('"run #1" -e x') == '"run #1" -e x'
    assert strip_comment("'a # b' # c") == "'a # b'"
    assert strip_comment("-t k=a#b") == "-t k=a#b"
    assert strip_comment(r"x \# y  # z") == r"x \# y"
    assert strip_comment('"say \\"#\\"" # c') == '"say \\"#\\""'
    assert strip_comment('x "open # quote') == 'x "open # quote'  # the parser reports it


_word = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12
)


@given(st.lists(_word, max_size=6), st.text(max_size=20))
def test_comment_after_quoted_words_is_dropped_and_words_survive(words, comment):
    line = " ".join(shlex.quote(w) for w in words)
    stripped = strip_comment(f"{line}  #{comment}")
    assert shlex.split(stripped) == words


@given(st.text(max_size=60))
def test_strip_comment_never_raises_and_only_cuts(line):
    out = strip_comment(line)
    assert line.startswith(out)
