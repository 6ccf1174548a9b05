"""The shared progress bar (tqdm): drawn on terminals and in notebooks (as a widget in a real
kernel), silent when piped, with quiet=True or MLOPS_JUPYTER_PROGRESS=0; the long operations
(drift, folder fingerprints, sweeps without a live view) draw it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from data_helpers import frame, run_notebook

import mlops_jupyter as mj
from mlops_jupyter.data import fingerprint as fpr
from mlops_jupyter.progress import ENV, progress, visible


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def test_visible_only_where_someone_can_see_it(monkeypatch):
    assert visible(file=_Terminal()) and not visible(file=io.StringIO())
    assert not visible(quiet=True, file=_Terminal())
    monkeypatch.setenv(ENV, "0")
    assert not visible(file=_Terminal())
    monkeypatch.setenv(ENV, "1")
    assert visible(file=io.StringIO()) and not visible(quiet=True, file=io.StringIO())


def test_bar_on_a_terminal_nothing_when_piped_or_quiet():
    term = _Terminal()
    with progress(total=4, desc="copy", unit="file", file=term, delay=0, leave=True) as bar:
        for _ in range(4):
            bar.update()
    assert "copy" in term.getvalue() and "4/4" in term.getvalue()
    for kw in ({"file": io.StringIO()}, {"file": _Terminal(), "quiet": True}):
        with progress(total=4, desc="copy", delay=0, **kw) as bar:
            assert list(progress(range(3), delay=0, **kw)) == [0, 1, 2]
            bar.update(4)
        assert kw["file"].getvalue() == ""


def test_a_closed_stream_does_not_stop_the_work():
    term = _Terminal()
    bar = progress(total=3, desc="work", file=term, delay=0)
    term.close()
    for _ in range(3):
        bar.update()
    bar.close()


def test_short_work_prints_nothing_even_on_a_terminal():
    term = _Terminal()
    with progress(total=2, desc="quick", file=term, delay=5.0) as bar:
        bar.update(2)
    assert term.getvalue() == ""


def test_drift_draws_a_bar_over_columns_only_when_visible(capsys, monkeypatch):
    ref, cur = frame(3000, 1).drop("id"), frame(3000, 2, shift=0.5).drop("id")
    mj.drift(ref, cur, store=False)
    assert "drift" not in capsys.readouterr().err  # piped: silent
    monkeypatch.setenv(ENV, "1")
    mj.drift(ref, cur, store=False)
    err = capsys.readouterr().err
    assert "drift: profiling" in err and "drift: tests" in err and "5/5" in err


def test_folder_fingerprint_draws_a_bar_in_bytes(tmp_path, capsys, monkeypatch):
    (tmp_path / "data").mkdir()
    for i in range(5):
        (tmp_path / "data" / f"part{i}.bin").write_bytes(np.full(200_000, i, np.uint8).tobytes())
    quiet_fp, _ = fpr.dir_fingerprint(tmp_path / "data")
    assert "fingerprint" not in capsys.readouterr().err
    monkeypatch.setenv(ENV, "1")
    fp, files = fpr.dir_fingerprint(tmp_path / "data")
    err = capsys.readouterr().err
    assert fp == quiet_fp and len(files) == 5
    assert "fingerprint" in err and "1.00M" in err  # 5 x 200 kB, in bytes


def test_sweep_without_live_view_draws_a_bar_over_trials(capsys, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setenv(ENV, "1")
    res = mj.sweep(lambda t: (t.suggest_float("x", -1, 1) - 0.2) ** 2, n_trials=4, live=False)
    err = capsys.readouterr().err
    assert len(res.trials()) == 4
    assert "sweep" in err and "4/4" in err and "trial" in err and "best=" in err


def test_notebook_gets_a_widget(tmp_path):
    nb = run_notebook(
        [
            "import tqdm.notebook\n"
            "from mlops_jupyter.progress import progress\n"
            "with progress(total=3, desc='work', delay=0) as bar:\n"
            "    bar.update(3)\n"
            "print('widget bar:', isinstance(bar, tqdm.notebook.tqdm))"
        ],
        tmp_path,
    )
    outs = nb.cells[0].outputs
    text = "".join(o.get("text", "") for o in outs if o.output_type == "stream")
    assert "widget bar: True" in text
    widgets = [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, json.dumps(outs)[:2000]
