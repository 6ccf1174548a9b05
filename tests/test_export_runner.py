"""The pipeline runner without a kernel: a stage module that fails to load stops with the
runner's own FAILED line and resume hint; progress lines stay aligned at 10+ stages; the
global random state round-trips through a stage's cache folder."""

from __future__ import annotations

import io
import random
import re

import numpy as np
from export_helpers import kernel_env, make_nb, run_pipeline
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_jupyter.export import export_notebook
from mlops_jupyter.export.progress import Progress


def test_a_stage_module_that_fails_to_load_gets_the_failed_line_and_resume_hint(
    tmp_path, monkeypatch
):
    kernel_env(monkeypatch)  # the pipeline subprocesses import this checkout
    (tmp_path / "helpers").mkdir()
    nb = make_nb(
        [
            ("x = 1", ["stage=first"]),
            # the import depends on the sys.path change, which the export keeps before it
            (
                "import sys\nsys.path.insert(0, 'helpers')\nimport late_helper\n"
                "y = late_helper.twice(x)",
                ["stage=second"],
            ),
        ],
        tmp_path / "nb.ipynb",
    )
    res = export_notebook(nb, tmp_path / "load_pipe")
    second = (res.path / "stages" / "second.py").read_text()
    assert second.index("sys.path.insert(0, 'helpers')") < second.index("import late_helper")
    failed = run_pipeline(res.path, check=False)  # the helper module does not exist yet
    assert failed.returncode == 1
    assert re.search(r"\[2/2\] second\s+FAILED", failed.stderr)
    assert "error: stage 'second' failed: ModuleNotFoundError" in failed.stderr
    assert "(stages/second.py, line" in failed.stderr and "resume at 'second'" in failed.stderr
    (tmp_path / "helpers" / "late_helper.py").write_text("def twice(v):\n    return 2 * v\n")
    again = run_pipeline(res.path)
    assert "first" in again.stderr and re.search(r"\[1/2\] first\s+cached", again.stderr)
    assert re.search(r"\[2/2\] second\s+done", again.stderr)


def test_progress_lines_align_at_ten_or_more_stages(tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    cells = [(f"v{i} = {i}", [f"stage=s{i}"]) for i in range(11)]
    cells.append(("total = " + " + ".join(f"v{i}" for i in range(11)), ["stage=sum_all"]))
    res = export_notebook(make_nb(cells, tmp_path / "many.ipynb"), tmp_path / "many_pipe")
    out = run_pipeline(res.path).stderr
    lines = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert len(lines) == 24
    assert {ln.index(" done") for ln in lines if " done" in ln} == {len("[12/12] sum_all")}
    assert lines[0].startswith("[ 1/12] s0 ")


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 2000), name=st.text("abc_", min_size=1, max_size=12))
def test_progress_labels_have_one_width_for_any_count(total, name):
    buf = io.StringIO()
    prog = Progress(total, 12, stream=buf)
    for i in sorted({1, total, max(1, total // 2)}):
        prog.cached(i, name)
    widths = {len(ln.split(" cached")[0]) for ln in buf.getvalue().splitlines()}
    assert len(widths) == 1


def test_random_state_round_trips_through_the_cache_folder(tmp_path):
    from mlops_jupyter.export import rngstate

    random.seed(7)
    np.random.seed(7)
    np.random.rand(3)  # a generator part-way through its stream
    saved = rngstate.capture()
    entry = rngstate.save(saved, tmp_path)
    want = (random.random(), np.random.rand())
    random.seed(99)
    np.random.seed(99)
    rngstate.restore(rngstate.load(tmp_path, entry))
    assert (random.random(), np.random.rand()) == want
    assert rngstate.save(rngstate.capture(), tmp_path)["version"] != entry["version"]
    # no saved state: the fixed start, the same in every process
    rngstate.restore(None)
    first = (random.random(), np.random.rand())
    rngstate.restore(None)
    assert (random.random(), np.random.rand()) == first


def test_torch_and_mlx_random_state_round_trips(tmp_path):
    import pytest

    from mlops_jupyter.export import rngstate

    torch = pytest.importorskip("torch")
    torch.manual_seed(5)
    torch.rand(4)
    mx = None
    try:
        import mlx.core as mx

        mx.random.seed(5)
        mx.random.normal((2,))
    except ImportError:
        pass
    entry = rngstate.save(rngstate.capture(), tmp_path)
    want = torch.rand(3).tolist(), (mx.random.normal((3,)).tolist() if mx else None)
    torch.manual_seed(0)
    if mx is not None:
        mx.random.seed(0)
    rngstate.restore(rngstate.load(tmp_path, entry))
    got = torch.rand(3).tolist(), (mx.random.normal((3,)).tolist() if mx else None)
    assert got == want


def test_a_value_a_stage_may_change_but_did_not_is_not_stored_twice(tmp_path, monkeypatch):
    import json

    kernel_env(monkeypatch)
    nb = make_nb(
        [
            ("import numpy as np\narr = np.arange(100_000.0)", ["stage=load"]),
            # passing `arr` to a function may change it: it is an output of `look`
            ("def total(a):\n    return float(a.sum())\n\ns = total(arr)", ["stage=look"]),
            ("print('R:', arr.mean(), s)", ["stage=use"]),
        ],
        tmp_path / "nb.ipynb",
    )
    res = export_notebook(nb, tmp_path / "same_pipe")
    first = run_pipeline(res.path)
    assert "R: 49999.5 4999950000.0" in first.stdout
    look = next((res.path / ".cache" / "look").iterdir())
    entry = json.loads((look / "manifest.json").read_text())["outputs"]["arr"]
    assert entry["file"].startswith("..") and not (look / "arr.npy").exists()
    assert (look / entry["file"]).is_file()
    again = run_pipeline(res.path, "--force", "look")
    assert re.search(r"use\s+cached", again.stderr)  # same content: downstream stays cached


def test_unseeded_generators_start_the_same_in_every_pipeline_process(tmp_path, monkeypatch):
    import pytest

    pytest.importorskip("torch")
    kernel_env(monkeypatch)
    nb = make_nb(
        [
            ("x = 1", ["stage=first"]),
            (
                "import random\nimport numpy as np\nimport torch\n"
                "print('R:', random.random(), np.random.rand(), torch.rand(1).item())",
                ["stage=draw"],
            ),
        ],
        tmp_path / "nb.ipynb",
    )
    res = export_notebook(nb, tmp_path / "seed_pipe")
    first = run_pipeline(res.path).stdout
    again = run_pipeline(res.path, "--force", "draw").stdout
    assert first.count("R:") == 1 and first == again  # cache keys stay stable too


def test_use_globals_reads_the_calling_modules_variables(monkeypatch):
    import pickle
    import sys
    import types

    from mlops_jupyter.export.stagerun import use_globals

    a = types.ModuleType("stage_a_mod")
    exec(
        "import math\ndef inner(v):\n    return v * scale\ndef f(v):\n    return inner(v) + math.floor(0.5)",
        a.__dict__,
    )
    b = types.ModuleType("stage_b_mod")
    monkeypatch.setitem(sys.modules, "stage_a_mod", a)
    monkeypatch.setitem(sys.modules, "stage_b_mod", b)
    b.f = use_globals(a.f, b.__dict__)
    b.scale = 5  # what the runner (or the stage's `global scale`) sets
    assert b.f(2) == 10  # f and the helper it calls read stage b's variables
    b.scale = 7
    assert b.f(2) == 14 and "scale" not in a.__dict__
    assert pickle.loads(pickle.dumps(b.f)) is b.f  # found by name in its new module


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), draws=st.integers(0, 700), gauss=st.booleans())
def test_random_state_round_trips_from_any_point_of_the_streams(
    tmp_path_factory, seed, draws, gauss
):
    from mlops_jupyter.export import rngstate

    random.seed(seed)
    np.random.seed(seed % 2**32)
    for _ in range(draws):  # past numpy's 624-word buffer for some examples
        random.random()
    np.random.rand(draws)
    if gauss:  # numpy's legacy generator caches the second value of a gaussian pair
        np.random.standard_normal()
    folder = tmp_path_factory.mktemp("rng")
    entry = rngstate.save(rngstate.capture(), folder)
    want = (random.random(), np.random.standard_normal(), np.random.rand())
    random.seed(seed + 1)
    np.random.rand(5)
    rngstate.restore(rngstate.load(folder, entry))
    assert (random.random(), np.random.standard_normal(), np.random.rand()) == want


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_keeps_the_stage_lines(monkeypatch):
    monkeypatch.delenv("MLOPS_JUPYTER_PROGRESS", raising=False)
    term = _Terminal()
    prog = Progress(3, 8, stream=term)
    prog.header("pipeline p: 3 stages")
    prog.cached(1, "load")
    prog.start(2, "train")
    prog.done(2, "train", 0.5, ["w"])
    prog.start(3, "evaluate")
    prog.failed(3, "evaluate", 0.1)
    out = term.getvalue()
    # the tqdm bar over the stages, drawn between the lines and cleared at the end
    assert "1/3" in out and "2/3" in out and "stage" in out and "\r" in out
    lines = [ln.split("\r")[-1] for ln in out.split("\n") if "[" in ln]
    assert "[1/3] load     cached" in lines
    assert "[2/3] train    done in 0.50s  -> w" in lines
    assert "[3/3] evaluate FAILED after 0.10s" in lines
    assert prog._bar is None and prog._thread is None


def test_progress_is_plain_lines_off_a_terminal_and_silent_when_quiet(monkeypatch):
    monkeypatch.delenv("MLOPS_JUPYTER_PROGRESS", raising=False)
    buf = io.StringIO()
    prog = Progress(2, 5, stream=buf)
    prog.start(1, "a")
    prog.done(1, "a", 0.25, [])
    assert buf.getvalue() == "[1/2] a     running\n[1/2] a     done in 0.25s\n"
    for quiet, env in ((True, None), (False, "0")):
        if env:
            monkeypatch.setenv("MLOPS_JUPYTER_PROGRESS", env)
        term = _Terminal()
        prog = Progress(2, 5, stream=term, quiet=quiet)
        prog.start(1, "a")
        prog.done(1, "a", 0.25, [])
        assert ("|" in term.getvalue()) is False
        assert term.getvalue() == (
            "" if quiet else "[1/2] a     running\n[1/2] a     done in 0.25s\n"
        )
