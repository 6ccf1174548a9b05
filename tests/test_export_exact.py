"""The exported pipeline gives the notebook's values: notebooks run in a real kernel
(nbclient), their pipelines as `python -m PKG` subprocesses, cold, from the cache, with
`--force STAGE` and with `--stage`. Each notebook reproduces a case that exported to a
silently different pipeline before (patterns from public notebooks: optuna's quickstart,
a pandas merge/join chapter, a PyTorch training function using a global model)."""

from __future__ import annotations

import pytest
from export_helpers import (
    cell_text,
    execute_notebook,
    kernel_env,
    make_nb,
    marked,
    notebook_values,
    pipeline_runs,
    points,
    run_pipeline,
)

from mlops_jupyter.export import export_notebook


def _same_everywhere(nb, tmp_path, want: list[str], forced: list[str], last: str) -> None:
    """The pipeline prints `want` cold, with each stage in `forced` re-run alone (the rest
    from the cache), and with only the last stage run (`--stage`)."""
    res = export_notebook(nb, tmp_path / "exact_pipe")
    cold = run_pipeline(res.path)
    assert marked(cold.stdout) == want, cold.stderr
    cached = run_pipeline(res.path)
    assert "0 run" in cached.stderr and marked(cached.stdout) == []
    for stage in forced:
        again = run_pipeline(res.path, "--force", stage, last)
        assert marked(again.stdout)[-1:] == want[-1:], (stage, again.stderr)
    alone = run_pipeline(res.path, "--stage", last, "--force", last)
    assert marked(alone.stdout)[-1:] == want[-1:]


def test_in_place_changes_in_their_own_stage_reach_later_stages(tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    nb = make_nb(
        [
            ("import numpy as np\nimport pandas as pd", ["stage=load"]),
            # a merge/join notebook: an outer merge, then dropna(inplace=True) on its own
            'pop = pd.DataFrame({"region": ["AL", "AK", "PR", "USA", "XX"],\n'
            '                    "population": [4.8e6, 7.3e5, np.nan, 3.1e8, 1.0]})\n'
            'abbrevs = pd.DataFrame({"abbreviation": ["AL", "AK", "PR", "USA"],\n'
            '                        "state": ["Alabama", "Alaska", "Puerto Rico", "US"]})\n'
            'merged = pop.merge(abbrevs, how="outer", left_on="region", '
            'right_on="abbreviation")\n'
            "xs = [3, 1, 2]\nlst = []\nd = {}\narr = np.zeros(3)",
            ("merged.dropna(inplace=True)", ["stage=clean"]),
            ("xs.sort()", ["stage=sort"]),
            ("lst.append(len(merged))", ["stage=append"]),
            # an alias changed in place in a later stage changes the original too
            ("alias = lst", ["stage=alias"]),
            ("alias.append(99)", ["stage=alias_change"]),
            ("d['n'] = len(xs)", ["stage=setitem"]),
            ("arr += 1", ["stage=augment"]),
            (
                # an estimator with a scikit-learn style fit(), defined in the notebook
                "class MeanScaler:\n    def fit(self, X):\n        self.mean_ = X.mean(axis=0)\n"
                "        return self\n\nscaler = MeanScaler()",
                ["stage=make_model"],
            ),
            ("scaler.fit(np.arange(6.0).reshape(-1, 2));", ["stage=fit"]),
            (
                "print('R:', len(merged), sorted(merged['region']))\n"
                "print('R:', xs, lst, d, arr.tolist(), scaler.mean_.tolist())",
                ["stage=report"],
            ),
        ],
        tmp_path / "merge.ipynb",
    )
    want = notebook_values(nb, tmp_path)
    assert want == [
        "R: 3 ['AK', 'AL', 'USA']",
        "R: [1, 2, 3] [3, 99] {'n': 3} [1.0, 1.0, 1.0] [2.0, 3.0]",
    ]
    _same_everywhere(nb, tmp_path, want, ["clean", "alias_change", "fit"], "report")


def test_a_function_defined_twice_in_one_stage_keeps_each_version(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    kernel_env(monkeypatch)
    nb = make_nb(
        [
            (
                "import optuna\noptuna.logging.set_verbosity(optuna.logging.WARNING)",
                ["stage=study"],
            ),
            # optuna's quickstart: an `objective`, a study; a new `objective`, a new study
            "def objective(trial):\n    x = trial.suggest_float('x', -10, 10)\n"
            "    return (x - 2) ** 2\n\n"
            "study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))\n"
            "study.optimize(objective, n_trials=5)\nfirst = study.best_value",
            "def objective(trial):\n    y = trial.suggest_float('y', -10, 10)\n"
            "    return (y + 3) ** 2 + 100\n\n"
            "study2 = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))\n"
            "study2.optimize(objective, n_trials=5)\nsecond = study2.best_value",
            ("print('R:', round(first, 9), round(second, 9))", ["stage=report"]),
        ],
        tmp_path / "quickstart.ipynb",
    )
    want = notebook_values(nb, tmp_path)
    assert len(want) == 1 and float(want[0].split()[1]) < 100  # the first objective's value
    _same_everywhere(nb, tmp_path, want, ["study"], "report")


def test_training_function_using_a_global_model_and_optimizer(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    kernel_env(monkeypatch)
    nb = make_nb(
        [
            (
                "import torch\ntorch.manual_seed(0)\nX = torch.randn(32, 3)\n"
                "y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(32)",
                ["stage=data"],
            ),
            (
                # draws from torch's global generator: its state passes from stage to stage
                "model = torch.nn.Linear(3, 1)\n"
                "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n\n"
                "def train(epochs):\n    losses = []\n    for _ in range(epochs):\n"
                "        optimizer.zero_grad()\n"
                "        loss = ((model(X).squeeze(1) - y) ** 2).mean()\n"
                "        loss.backward()\n        optimizer.step()\n"
                "        losses.append(loss.item())\n    return losses",
                ["stage=model"],
            ),
            # changes the model only: the optimizer holding its parameters goes along
            ("model.train()", ["stage=mode"]),
            ("losses = train(5)", ["stage=fit"]),
            ("more = train(2)", ["stage=fit_more"]),
            (
                "noise = torch.rand(2)\n"
                "print('R:', [round(v, 5) for v in losses + more],\n"
                "      [round(v, 5) for v in model.weight.flatten().tolist()],\n"
                "      [round(v, 6) for v in noise.tolist()])",
                ["stage=report"],
            ),
        ],
        tmp_path / "torch_train.ipynb",
    )
    want = notebook_values(nb, tmp_path, "R:")
    assert len(want) == 1
    _same_everywhere(nb, tmp_path, want, ["model", "fit", "fit_more"], "report")


def test_imports_rng_and_shown_values_match_the_notebook(tmp_path, monkeypatch):
    kernel_env(monkeypatch)
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "local_helper.py").write_text("VALUE = 41\n")
    nb = make_nb(
        [
            (
                # the import needs the sys.path change above it
                "import sys\nsys.path.insert(0, 'helpers')\nimport local_helper\n"
                "import random\nimport numpy as np\nrandom.seed(3)\nnp.random.seed(3)\n"
                "a = random.random()",
                ["stage=setup"],
            ),
            (
                # two submodules of one package, bound to the same top-level name
                "import xml.dom.minidom\nimport xml.etree.ElementTree\n"
                "doc = xml.dom.minidom.parseString('<a><b/></a>')\n"
                "root = xml.etree.ElementTree.fromstring('<a><c/></a>')\n"
                "b = np.random.rand()  # the global generators carry on from stage to stage",
                ["stage=parse"],
            ),
            ("c = random.random() + np.random.rand()", ["stage=draw"]),
            # what a cell ending in an expression shows (`;` hides it)
            ("d = {'b': 2, 'a': 1}\nsorted(d.items())", ["stage=show"]),
            "n = len(d);",
            (
                "print('R:', local_helper.VALUE + 1, doc.documentElement.firstChild.tagName,\n"
                "      root[0].tag, round(a, 12), round(b, 12), round(c, 12), random.random())",
                ["stage=report"],
            ),
        ],
        tmp_path / "imports.ipynb",
    )
    executed = execute_notebook(nb, tmp_path)
    want = marked("".join(cell_text(c) for c in executed.cells))
    assert want[0].startswith("R: 42 b c ")
    shown = cell_text(executed.cells[3])
    assert shown == "[('a', 1), ('b', 2)]\n" and cell_text(executed.cells[4]) == ""
    res = export_notebook(nb, tmp_path / "exact_pipe")
    cold = run_pipeline(res.path)
    assert marked(cold.stdout) == want and shown in cold.stdout
    assert cold.stdout.count("[('a', 1), ('b', 2)]") == 1  # `n = len(d);` shows nothing
    for stage in ["parse", "draw"]:
        again = run_pipeline(res.path, "--force", stage, "report")
        assert marked(again.stdout) == want, (stage, again.stderr)
    alone = run_pipeline(res.path, "--stage", "report", "--force", "report")
    assert marked(alone.stdout) == want


def test_pipeline_run_gets_what_the_notebook_runs_logged(tmp_path, monkeypatch):
    import mlops_jupyter as mj
    from mlops_jupyter.data import versions

    kernel_env(monkeypatch)
    nb = make_nb(
        [
            (
                "%load_ext mlops_jupyter\nimport mlops_jupyter as mj\nimport pandas as pd\n"
                "offset = 1.0\n%mlops_run start training --no-live",
                ["stage=setup"],
            ),
            (
                "df = pd.DataFrame({'x': [1.0, 2.0, 3.0]}) + offset\n"
                "mj.log_params({'extra': 5})\n"
                "for s in range(3):\n    mj.log(step=s, loss=float(df.x[s]))",
                ["stage=train"],
            ),
            ("mj.log(total=float(df.x.sum()))\n%mlops_run end", ["stage=report"]),
            (
                "for lr in [0.1, 0.2]:\n    with mj.start_run(f'lr-{lr}'):\n"
                "        mj.log(acc=lr * 10)",
                ["stage=sweep"],
            ),
            "%%mlops_run cell-b -e other-exp --no-live\nmj.log(v=2.0)",
        ],
        tmp_path / "tracked.ipynb",
    )
    execute_notebook(nb, tmp_path)
    nb_runs = {r["name"]: r for r in mj.runs().to_dicts()}
    assert nb_runs["cell-b"]["experiment"] == "other-exp"
    want = points([nb_runs[n]["id"] for n in ["training", "lr-0.1", "lr-0.2", "cell-b"]])
    assert versions()["source"].to_list() == []  # the notebook itself reads no data files

    res = export_notebook(nb, tmp_path / "tracked_pipe")
    run_pipeline(res.path)
    parents, children = pipeline_runs()
    parent = parents[-1]
    # nested runs' metrics and the params logged on a stage run reach the pipeline run
    assert points([parent["id"]]) == want
    assert parent["params"]["extra"] == 5
    # the span's name goes to the stage that logs inside it, not to the one with `start`
    names = {s["tags"]["mlops.stage"]: s["name"] for s in children[parent["id"]]}
    assert names["train"] == "training" and names["setup"] == "setup"
    rows = mj.runs().to_dicts()
    cell_b = [r for r in rows if r["name"] == "cell-b" and r["parent_id"]]
    assert [r["experiment"] for r in cell_b] == ["other-exp"]  # `-e` of the cell is kept
    # the frame passed from train to report went through the stage cache: not a data input
    assert not [s for s in versions()["source"].to_list() if s and ".cache" in s]

    again = run_pipeline(res.path)  # every stage cached: the same on the pipeline run
    assert "0 run" in again.stderr
    parents, _ = pipeline_runs()
    assert points([parents[-1]["id"]]) == want and parents[-1]["params"]["extra"] == 5
