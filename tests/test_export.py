"""Notebook -> pipeline export without running kernels: stage splitting, the derived DAG,
the generated code, params.yaml and output serialisation."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest
from export_helpers import NOTEBOOKS, make_nb
from hypothesis import given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.export import ExportError, export_notebook, plan_notebook, serialize
from mlops_jupyter.export import params as P


def _stages(plan):
    return {s.name: s for s in plan.runnable}


def test_example_notebook_dag_is_derived_from_the_code():
    plan = plan_notebook(NOTEBOOKS / "pipeline_example.ipynb")
    st = _stages(plan)
    assert list(st) == ["load", "prep", "train", "evaluate"]
    assert plan.params == {
        "seed": 0,
        "n_samples": 400,
        "noise": 0.1,
        "test_frac": 0.25,
        "lr": 0.1,
        "epochs": 30,
    }
    assert st["load"].inputs == {} and st["load"].params == ["seed", "n_samples", "noise"]
    assert st["prep"].inputs == {"X": "load", "y": "load"}
    assert st["train"].inputs == {"X_train": "prep", "y_train": "prep"}
    assert set(st["train"].params) == {"lr", "epochs", "seed"}
    assert st["evaluate"].inputs == {
        "X_test": "prep",
        "w": "train",
        "y_test": "prep",
        "std": "prep",
        "true_w": "load",
    }
    assert st["train"].outputs == ["w"] and st["evaluate"].outputs == []
    # the exploration cell tagged `skip` is not in any stage; the run handle is not data
    assert all("print(X_train.shape" not in s.body for s in plan.stages)
    assert "run" not in st["train"].outputs and st["evaluate"].handles == ["run"]
    # a helper function moves to module level of its stage
    assert any(h.startswith("def standardize") for h in st["prep"].helpers)
    assert not plan.warnings


def test_generated_package_is_readable_python(tmp_path):
    res = export_notebook(NOTEBOOKS / "pipeline_example.ipynb", tmp_path / "ex_pipe")
    assert res.stages == ["load", "prep", "train", "evaluate"]
    pkg = res.path
    for f in ["__main__.py", "pipeline.py", "params.yaml", "stages/train.py", "README.md"]:
        assert (pkg / f).is_file(), f
    train = (pkg / "stages" / "train.py").read_text()
    ast.parse(train)
    assert "def run(X_train, y_train, *, lr, epochs, seed):" in train
    assert 'return {"w": w}' in train
    assert "stage_run(" in train and "mj.start_run" not in train
    assert "import numpy as np" in train
    evaluate = (pkg / "stages" / "evaluate.py").read_text()
    assert "    run = stage_run()" in evaluate
    assert "mj.end_run()" not in evaluate.replace("# mj.end_run()", "")
    # only the runtime, the stdlib and what the notebook imports
    for f in (pkg / "stages").glob("*.py"):
        mods = {
            (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
            for n in ast.walk(ast.parse(f.read_text()))
            if isinstance(n, (ast.Import, ast.ImportFrom)) and not getattr(n, "level", 0)
            for a in n.names
        }
        assert mods <= {"numpy", "mlops_jupyter"}, (f.name, mods)
    assert P.load(pkg / "params.yaml") == res.params
    assert "exported 4 stages" in res.summary()


def test_headings_split_stages_when_no_stage_tags(tmp_path):
    nb = make_nb(
        [
            ("md", "# My analysis"),
            "import math",
            ("md", "## Load data"),
            "xs = [1.0, 2.0, 3.0]",
            ("md", "## Fit"),
            "%matplotlib inline\nmean = sum(xs) / len(xs)",
            "sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))",
            ("md", "## Report"),
            "display(mean, sd)",
        ],
        tmp_path / "nb.ipynb",
    )
    plan = plan_notebook(nb)
    st = _stages(plan)
    assert list(st) == ["load_data", "fit", "report"]
    assert st["fit"].inputs == {"xs": "load_data"} and st["fit"].outputs == ["mean", "sd"]
    assert st["report"].inputs == {"mean": "fit", "sd": "fit"}
    assert st["report"].runtime_imports == ["display"]
    assert "# %matplotlib inline" in st["fit"].body
    assert any("%matplotlib" in w for w in plan.warnings)


def test_mutation_in_place_makes_a_new_version_and_shadowing_picks_the_latest(tmp_path):
    nb = make_nb(
        [
            ("a = [1, 2]\nb = 5", ["stage=one"]),
            ("a[0] = 10", ["stage=two"]),
            ("b = b + 1", ["stage=three"]),
            ("total = sum(a) + b", ["stage=four"]),
        ],
        tmp_path / "nb.ipynb",
    )
    st = _stages(plan_notebook(nb))
    assert st["two"].inputs == {"a": "one"} and st["two"].outputs == ["a"]
    assert st["four"].inputs == {"a": "two", "b": "three"}


def test_helpers_used_by_later_stages_are_imported_not_serialised(tmp_path):
    nb = make_nb(
        [
            ("import math\n\ndef area(r):\n    return math.pi * r**2\n\nr = 2.0", ["stage=define"]),
            ("a = area(r)", ["stage=use"]),
            ("# only a helper\ndef double(x):\n    return 2 * x", ["stage=tools"]),
            ("b = double(a)", ["stage=last"]),
        ],
        tmp_path / "nb.ipynb",
    )
    res = export_notebook(nb, tmp_path / "pipe")
    use = (res.path / "stages" / "use.py").read_text()
    assert "from .define import area" in use
    assert "def run(r):" in use
    text = (res.path / "pipeline.py").read_text()
    assert "uses=['define']" in text
    # a stage of helpers only is a module other stages import, not a stage that runs
    assert res.stages == ["define", "use", "last"]
    assert (res.path / "stages" / "tools.py").is_file() and "uses=['tools']" in text


def test_function_reading_notebook_variables_gets_them_as_stage_inputs(tmp_path):
    nb = make_nb(
        [
            ("scale = 3\n\ndef f(x):\n    return x * scale", ["stage=a"]),
            ("y = f(2)", ["stage=b"]),
        ],
        tmp_path / "nb.ipynb",
    )
    st = _stages(plan_notebook(nb))
    # `scale` is an input of the stage that calls `f`, bound into f's globals at run time
    assert st["b"].inputs == {"scale": "a"} and st["b"].globals == ["scale"]
    assert st["b"].rebind == ["f"] and st["b"].code_imports == {"a": ["f"]}
    res = export_notebook(nb, tmp_path / "pipe")
    b = (res.path / "stages" / "b.py").read_text()
    assert "f = use_globals(f, globals())" in b and "def run():" in b and "global scale" in b


def test_function_rebinding_a_notebook_variable_is_refused_naming_cell_and_construct(tmp_path):
    nb = make_nb(
        [
            ("count = 0", ["stage=a"]),
            "def bump():\n    global count\n    count += 1",
            ("bump()\ntotal = count", ["stage=b"]),
        ],
        tmp_path / "nb.ipynb",
    )
    with pytest.raises(ExportError, match=r"cell 2: function `bump` .*`global count`"):
        plan_notebook(nb)


def test_what_cannot_be_exported_exactly_is_refused_naming_cell_and_construct(tmp_path):
    redefined = make_nb(
        [
            ("def f(x):\n    return x + 1", ["stage=a"]),
            ("y = f(1)\n\ndef f(x):\n    return x + 2\n\nz = f(1)", ["stage=b"]),
        ],
        tmp_path / "redefined.ipynb",
    )
    with pytest.raises(ExportError, match=r"stage 'b' .*uses `f` of stage 'a' and then defines"):
        plan_notebook(redefined)
    cls = make_nb(
        [
            (
                "scale = 2\n\nclass Scaler:\n    def __call__(self, v):\n        return v * scale",
                ["stage=a"],
            ),
            ("y = Scaler()(3)", ["stage=b"]),
        ],
        tmp_path / "cls.ipynb",
    )
    with pytest.raises(ExportError, match=r"class `Scaler` of stage 'a'.*\(scale\)"):
        plan_notebook(cls)
    decorated = make_nb([_decorated_cell(), ("y = f(2)", ["stage=b"])], tmp_path / "d.ipynb")
    with pytest.raises(
        ExportError, match=r"cell 1: `f` reads notebook variables when it is defined .*: n\)"
    ):
        plan_notebook(decorated)
    body = make_nb(
        [
            ("n = 3\n\nclass Config:\n    size = n * 2", ["stage=a"]),
            ("m = Config.size", ["stage=b"]),
        ],
        tmp_path / "body.ipynb",
    )
    with pytest.raises(ExportError, match=r"cell 1: `Config` reads notebook .*class body: n\)"):
        plan_notebook(body)
    # used in its own stage only, such a def stays where it is and runs there
    st = _stages(plan_notebook(make_nb([_decorated_cell()], tmp_path / "one.ipynb")))
    assert "@functools.lru_cache(maxsize=n)" in st["a"].body and not st["a"].helpers


def _decorated_cell() -> tuple[str, list[str]]:
    """A def whose decorator reads a notebook variable (evaluated where the def runs)."""
    return (
        "import functools\nn = 3\n\n@functools.lru_cache(maxsize=n)\n"
        "def f(x):\n    return 2 * x\n\nu = f(1)",
        ["stage=a"],
    )


def test_in_place_changes_and_calls_that_change_nothing(tmp_path):
    nb = make_nb(
        [
            (
                "import numpy as np\nxs = [3, 1]\ndf = {'a': 1}\nrng = np.random.default_rng(0)\n"
                "sample0 = 'k'",
                ["stage=one"],
            ),
            (
                "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
                "print(len(xs), sorted(xs))\nnp.mean(xs)\nn = len(df)\nax.plot(xs, c=sample0)",
                ["stage=look"],
            ),
            ("xs.sort()\nsample = rng.normal()", ["stage=change"]),
            ("total = sum(xs) + sample + n\nprint(df)", ["stage=last"]),
        ],
        tmp_path / "nb.ipynb",
    )
    st = _stages(plan_notebook(nb))
    # print/len/sorted/np.mean and plotting change nothing (the axes they draw on do)
    assert st["look"].outputs == ["n"]
    assert set(st["change"].outputs) == {"xs", "sample"} and st["change"].inputs == {
        "xs": "one",
        "rng": "one",
    }
    assert st["last"].inputs == {"xs": "change", "sample": "change", "n": "look", "df": "one"}


def test_bad_notebooks_get_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        export_notebook(tmp_path / "missing.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(ExportError, match="not a notebook"):
        plan_notebook(bad)
    nb = make_nb(
        [("x = 1", ["stage=a"]), ("y = 2", ["stage=b"]), ("z = x", ["stage=a"])],
        tmp_path / "split.ipynb",
    )
    with pytest.raises(ExportError, match="next to each other"):
        plan_notebook(nb)
    nb = make_nb(
        [("lr = base_lr * 2", ["parameters"]), ("x = lr", ["stage=a"])], tmp_path / "params.ipynb"
    )
    with pytest.raises(ExportError, match="not a plain value"):
        plan_notebook(nb)
    nb = make_nb([("x = (1", ["stage=a"])], tmp_path / "syntax.ipynb")
    with pytest.raises(ExportError, match="cell 1 is not valid Python"):
        plan_notebook(nb)
    ok = make_nb([("x = 1", ["stage=a"])], tmp_path / "ok.ipynb")
    with pytest.raises(ExportError, match="Python identifier"):
        export_notebook(ok, tmp_path / "my-pipe")
    with pytest.raises(InvalidInputError, match="target"):
        export_notebook(ok, tmp_path / "p", target="kubeflow")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not written by an export"):
        export_notebook(ok, tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_reexport_replaces_code_and_keeps_the_cache(tmp_path):
    ok = make_nb([("x = 1", ["stage=a"]), ("y = x + 1", ["stage=b"])], tmp_path / "nb.ipynb")
    out = export_notebook(ok, tmp_path / "p").path
    (out / ".cache" / "a").mkdir(parents=True)
    export_notebook(ok, out)
    assert (out / ".cache" / "a").is_dir()


def test_source_run_is_found_by_notebook_path_tag(tmp_path):
    nb = make_nb([("x = 1", ["stage=a"])], tmp_path / "nb.ipynb")
    with mj.start_run("nb-run", experiment="exp1", tags={"notebook.path": str(nb.resolve())}) as r:
        pass
    res = export_notebook(nb, tmp_path / "p")
    assert res.source_run == r.id
    text = (res.path / "pipeline.py").read_text()
    assert f"SOURCE_RUN = {r.id!r}" in text and "EXPERIMENT = 'exp1'" in text


def test_params_yaml_round_trips_and_overrides_are_typed(tmp_path):
    values = {"a": 1, "b": 0.5, "c": "adam", "d": True, "e": None, "f": [64, 64], "g": math.inf}
    values |= {"h": "yes", "i": "1e-3", "j": {"x": [1, 2]}, "k": "two\nlines", "l": "null"}
    f = tmp_path / "params.yaml"
    f.write_text(P.dump(values, "header line"))
    assert f.read_text().startswith("# header line\n")
    assert P.load(f) == values
    f.write_text("lr: 0.1  # learning rate\nname: 'it''s'\nflag: yes\nlayers: [a, b]\n")
    assert P.load(f) == {"lr": 0.1, "name": "it's", "flag": True, "layers": ["a", "b"]}
    assert P.coerce("lr", "0.01", 0.1) == 0.01 and P.coerce("n", "3", 1) == 3
    assert P.coerce("lr", "1e-3", 0.1) == 0.001 and P.coerce("n", "1e3", 1) == 1000
    assert P.coerce("opt", "sgd", "adam") == "sgd" and P.coerce("opt", "123", "adam") == "123"
    assert P.coerce("opt", "a: [b", "adam") == "a: [b"  # a string parameter takes the text
    assert P.coerce("layers", "[32, 16]", [64]) == [32, 16]
    assert P.coerce("layers", "- 8\n- 4", [64]) == [8, 4]  # the same loader as the file
    with pytest.raises(InvalidInputError, match="integer"):
        P.coerce("n", "0.5", 1)
    with pytest.raises(InvalidInputError, match="true or false"):
        P.coerce("flag", "maybe", False)
    with pytest.raises(InvalidInputError, match="list"):
        P.coerce("layers", "64", [64])
    with pytest.raises(InvalidInputError, match="cannot read the value"):
        P.coerce("layers", "[1, 2", [64])
    f.write_text("lr: 0.1\nlayers: [64, 64\n")
    with pytest.raises(InvalidInputError, match=r"params.yaml, line \d+: not valid YAML"):
        P.load(f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(InvalidInputError, match="mapping of parameter names"):
        P.load(f)


HAND_EDITED = r"""
# params.yaml as people write it by hand
"lr": 3e-4            # quoted key, exponent without a dot
'batch size': 32
epochs: 10  # comment after a value
layers:               # block list
  - 128
  - 64
optimizer:
  name: adamw         # nested block mapping
  betas: [0.9, 0.999]
prompt: |
  Answer briefly.
  Cite the source.
note: >
  folded onto
  one line
path: "C:\\data\\train.csv"
empty:
flag: off
"""


def test_hand_edited_params_yaml_in_ordinary_yaml_styles(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text(HAND_EDITED)
    assert P.load(f) == {
        "lr": 3e-4,
        "batch size": 32,
        "epochs": 10,
        "layers": [128, 64],
        "optimizer": {"name": "adamw", "betas": [0.9, 0.999]},
        "prompt": "Answer briefly.\nCite the source.\n",
        "note": "folded onto one line\n",
        "path": "C:\\data\\train.csv",
        "empty": None,
        "flag": False,
    }


def test_hand_edits_are_held_to_the_parameters_cell_types(tmp_path):
    from mlops_jupyter.export.runtime import resolve_params

    declared = {"lr": 0.1, "epochs": 3, "layers": [64], "opt": "adam", "extra": None}
    (tmp_path / "params.yaml").write_text(
        "lr: 1e-3\nepochs: 5.0\nlayers:\n  - 32\n  - 16\nopt: sgd  # faster\n"
    )
    got = resolve_params(tmp_path, declared, {"epochs": "7"})
    assert got == {"lr": 0.001, "epochs": 7, "layers": [32, 16], "opt": "sgd", "extra": None}
    assert type(got["lr"]) is float and type(got["epochs"]) is int
    (tmp_path / "params.yaml").write_text("epochs: ten\n")
    with pytest.raises(InvalidInputError, match="epochs: expected an integer"):
        resolve_params(tmp_path, declared, None)
    (tmp_path / "params.yaml").write_text("opt: 12\n")
    with pytest.raises(InvalidInputError, match="opt: expected a string"):
        resolve_params(tmp_path, declared, None)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
        _scalars | st.lists(_scalars, max_size=4) | st.dictionaries(st.text(max_size=5), _scalars),
        max_size=8,
    )
)
def test_params_yaml_round_trips_any_parameters_cell(tmp_path_factory, values):
    f = tmp_path_factory.mktemp("p") / "params.yaml"
    f.write_text(P.dump(values, "header"), encoding="utf-8")
    assert P.load(f) == values


def test_outputs_use_native_formats(tmp_path):
    import pandas as pd
    import polars as pl

    cases = {
        "arr": (np.arange(6.0).reshape(2, 3), "npy"),
        "pl_df": (pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}), "polars-parquet"),
        "pd_df": (pd.DataFrame({"a": [1.5, 2.5]}, index=[3, 4]), "pandas-parquet"),
        "pd_odd": (pd.DataFrame({0: [1]}), "pickle"),  # parquet needs string column names
        "obj": ({"k": [1, 2]}, "pickle"),
    }
    for name, (obj, fmt) in cases.items():
        entry = serialize.save(obj, tmp_path, name)
        assert entry["format"] == fmt, name
        back = serialize.load(tmp_path, entry)
        if isinstance(obj, np.ndarray):
            np.testing.assert_array_equal(back, obj)
        elif isinstance(obj, pl.DataFrame):
            assert back.equals(obj)
        elif isinstance(obj, pd.DataFrame):
            pd.testing.assert_frame_equal(back, obj)
        else:
            assert back == obj
    # the version is the content hash: same content, same version
    assert (
        serialize.save(np.ones(3), tmp_path, "v1")["version"]
        == serialize.save(np.ones(3), tmp_path, "v2")["version"]
    )
    with pytest.raises(serialize.SerializeError, match="top level of a cell"):
        serialize.save(lambda x: x, tmp_path, "fn")


def test_torch_and_mlx_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.arange(4.0)
    e = serialize.save(t, tmp_path, "t")
    assert e["format"] == "torch" and torch.equal(serialize.load(tmp_path, e), t)
    m = torch.nn.Linear(2, 1)
    e = serialize.save(m, tmp_path, "m")
    assert e["format"] == "torch"
    assert torch.equal(serialize.load(tmp_path, e).weight, m.weight)


def test_mlx_outputs(tmp_path):
    mx = pytest.importorskip("mlx.core")
    a = mx.array([1.0, 2.0, 3.0])
    e = serialize.save(a, tmp_path, "a")
    assert e["format"] == "mlx"
    assert serialize.load(tmp_path, e).tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("name", ["pipeline_example.ipynb", "quickstart.ipynb"])
def test_generated_code_passes_pyflakes(name, tmp_path):
    """No undefined names, no unused imports (unused locals are the notebook's own)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    if not (NOTEBOOKS / name).exists():
        pytest.skip(f"{name} not written yet")
    res = export_notebook(NOTEBOOKS / name, tmp_path / "pipe", target="airflow")
    proc = subprocess.run(
        [
            ruff,
            "check",
            "--isolated",
            "--no-cache",
            "--select",
            "F",
            "--ignore",
            "F841",
            str(res.path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_literal_params_of_mlops_run_cells_become_pipeline_params(tmp_path):
    nb = make_nb(
        [
            ("lr = 0.1\nseed = 1", ["parameters"]),
            "%%mlops_run fit\nwd = 1e-4 * 2\nbatch = 32\nlr = 0.5\nsteps = 10; k = len('ab')\n"
            "total = wd * batch * lr * steps * k * seed",
            "%%mlops_run again\nbatch = 64\nout = batch + total",
        ],
        tmp_path / "nb.ipynb",
    )
    plan = plan_notebook(nb)
    # wd agrees everywhere: promoted; batch differs between cells and lr differs from the
    # parameters cell: they stay in the code; `steps` shares its line with other code
    assert plan.params == {"lr": 0.1, "seed": 1, "wd": 2e-4}
    body = plan.runnable[0].body
    assert "wd = " not in body and "batch = 32" in body and "lr = 0.5" in body
    assert "steps = 10; k = len('ab')" in body
    assert "wd" in plan.runnable[0].params


def test_stage_names_and_notebook_run_names():
    from mlops_jupyter.export.notebook import identifier, magic_run_name

    assert (
        identifier("Stored versions: compare from their profiles")
        == "stored_versions_compare_from_their"
    )
    assert identifier("2nd pass") == "s2nd_pass" and identifier("import") == "import_"
    assert magic_run_name("%%mlops_run prepare --no-live\nx = 1") == "prepare"
    assert magic_run_name("%%mlops_run --experiment e -t k=v fit\n") == "fit"
    assert magic_run_name("%mlops_run start long-run") == "long-run"
    assert magic_run_name("%%mlops_run --no-live\n") is None
    plan = plan_notebook(NOTEBOOKS / "pipeline_example.ipynb")
    assert _stages(plan)["train"].run_name == "pipeline-example"
