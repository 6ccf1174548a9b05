"""`mlops-jupyter ci`: a small exported pipeline trains a torch model that a stage
registers; the command runs it (cached stages reused), gates the candidate against
production and writes a Markdown summary with PNG plots. Exit 0 pass, 1 fail, 2 usage error
or failed pipeline. The documented GitHub Actions / GitLab CI examples call it validly."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from export_helpers import kernel_env, make_nb
from loop_helpers import linear as _linear

import mlops_jupyter as mj
from mlops_jupyter.export import export_notebook
from mlops_jupyter.registry import model_version, versions

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "ci-examples"

CELLS = [
    ("epochs = 25\nbreak_it = 0", ["parameters"]),
    (
        "import numpy as np\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.normal(size=(600, 2)).astype(np.float32)\n"
        "y = (X[:, 0] + 0.3 * rng.normal(size=600) > 0).astype(np.int64)\n"
        "eval_data = {'X': X[:300], 'y': y[:300]}",
        ["stage=data"],
    ),
    (
        "import torch\n"
        "import mlops_jupyter as mj\n"
        "if break_it:\n"
        "    raise ValueError('planted failure in training')\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Linear(2, 2)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.5)\n"
        "with mj.start_run('train'):\n"
        "    for epoch in range(epochs):\n"
        "        loss = torch.nn.functional.cross_entropy(\n"
        "            model(torch.from_numpy(X)), torch.from_numpy(y))\n"
        "        opt.zero_grad()\n"
        "        loss.backward()\n"
        "        opt.step()\n"
        "        mj.log(epoch, loss=float(loss))\n"
        "    mj.register_model('clf', model)",
        ["stage=train"],
    ),
    ("note = f'{type(model).__name__} on {len(eval_data[\"y\"])} examples'", ["stage=report"]),
]


def _production(model: torch.nn.Module) -> int:
    v = mj.register_model("clf", model)
    mj.promote_model("clf", v, "staging")
    mj.promote_model("clf", v, "production")
    return v


def _ci(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops_jupyter.cli", "ci", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def pipe(tmp_path, monkeypatch) -> Path:
    kernel_env(monkeypatch)
    res = export_notebook(make_nb(CELLS, tmp_path / "train.ipynb"), tmp_path / "train_pipe")
    assert res.stages == ["data", "train", "report"]
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 2)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=2000) > 0).astype(np.int64)
    pl.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "y": y}).write_parquet(tmp_path / "eval.parquet")
    return res.path


def test_ci_passes_fails_reuses_the_cache_and_reports_a_broken_stage(pipe, tmp_path, child_env):
    weak = _production(_linear(0.0, 1.0))  # scores by the noise feature: about 50 %
    args = ["--pipeline", str(pipe), "--model", "clf", "--data", "eval.parquet", "-q"]

    first = _ci(child_env, tmp_path, *args, "--out", "out/summary.md")
    assert first.returncode == 0, first.stderr + first.stdout
    md = (tmp_path / "out" / "summary.md").read_text()
    assert md.startswith("## Model CI: clf v2 — PASS")
    assert f"| metric | candidate v2 | production v{weak} | delta | interval of the delta |" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| accuracy |"))
    cand, base = (float(x) for x in row.split("|")[2:4])
    assert cand > 0.85 and base < 0.6
    assert re.search(r"95% \[\+0\.\d+, \+0\.\d+\]", row)  # the delta's bootstrap interval
    assert "| not_worse(accuracy, by=0) | pass |" in md
    assert "(3 run, 0 cached)" in md and re.search(r"\| train \| ran \| \d+\.\d\d s \|", md)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links == ["summary-curves.png", "summary-metrics.png"]
    for name in links:  # relative to the summary, real PNG files
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.stdout.startswith("## Model CI: clf v2 — PASS")

    # a second run reuses every stage; the candidate is the version the cached run registered
    again = _ci(child_env, tmp_path, *args, "--out", "again.md")
    assert again.returncode == 0, again.stderr
    md2 = (tmp_path / "again.md").read_text()
    assert md2.startswith("## Model CI: clf v2 — PASS")
    assert "(0 run, 3 cached)" in md2 and "| train | cached |" in md2
    assert versions("clf").height == 2

    # --slice: the gate's metrics per value of a column the rules file keeps out of the inputs
    frame = pl.read_parquet(tmp_path / "eval.parquet")
    frame = frame.with_columns(
        grp=pl.when(pl.col("x1") > 0).then(pl.lit("a")).otherwise(pl.lit("b"))
    )
    frame.write_parquet(tmp_path / "eval_s.parquet")
    (tmp_path / "feat.toml").write_text(
        'features = ["x0", "x1"]\n\n[[rule]]\ntype = "not_worse"\nmetric = "accuracy"\nby = 0.0\n'
    )
    sl = ["--pipeline", str(pipe), "--model", "clf", "--data", "eval_s.parquet", "-q"]
    sliced = _ci(
        child_env, tmp_path, *sl, "--rules", "feat.toml", "--slice", "grp", "--out", "s.md"
    )
    assert sliced.returncode == 0, sliced.stderr + sliced.stdout
    md_s = (tmp_path / "s.md").read_text()
    assert "### Slices" in md_s
    n_a = frame.filter(pl.col("grp") == "a").height
    assert re.search(rf"\| grp=a \| {n_a} \| accuracy \|", md_s), md_s
    assert mj.gates("clf")[-1]["report"]["slices"]["rows"]

    # --register: the pipeline's `model` output as a new model's version, gated by a rules
    # file on the pipeline's `eval_data` output; no production yet, so not_worse is skipped
    (tmp_path / "rules.toml").write_text(
        '[[rule]]\ntype = "threshold"\nmetric = "accuracy"\nop = ">="\nvalue = 0.8\n\n'
        '[[rule]]\ntype = "not_worse"\nmetric = "log_loss"\nby = 0.05\n'
    )
    reg = ["--pipeline", str(pipe), "--model", "clf2", "--register", "--rules", "rules.toml"]
    done = _ci(child_env, tmp_path, *reg, "--out", "reg.md", "-q")
    assert done.returncode == 0, done.stderr + done.stdout
    md4 = (tmp_path / "reg.md").read_text()
    assert "registered by `mlops-jupyter ci`" in md4 and "vs no production" in md4
    assert "| threshold(accuracy >= 0.8) | pass |" in md4 and "| skipped |" in md4
    assert re.search(r"\| accuracy \| 0\.9\d* \| - \| - \| - \|", md4)
    # linked to the training stage's run, the one that registered clf v2
    assert model_version("clf2", 1)["run_id"] == model_version("clf", 2)["run_id"]
    assert mj.gates("clf2")[0]["report"]["n"] == 300  # the pipeline's eval_data output

    # a stronger production: the untrained candidate fails the gate
    strong = _production(_linear(10.0, 0.0))
    failed = _ci(child_env, tmp_path, *args, "--params", "epochs=0", "--out", "fail.md")
    assert failed.returncode == 1, failed.stderr
    md3 = (tmp_path / "fail.md").read_text()
    assert md3.startswith("## Model CI: clf v4 — FAIL")
    assert f"| production v{strong} |" in md3 and "| not_worse(accuracy, by=0) | **FAIL** |" in md3
    assert "(2 run, 1 cached)" in md3 and "| data | cached |" in md3
    assert [g["passed"] for g in mj.gates("clf")] == [True, True, True, False]

    # a failing stage: exit 2 with the stage's error, in a summary too
    broken = _ci(child_env, tmp_path, *args, "--params", "break_it=1", "--out", "broken.md")
    assert broken.returncode == 2
    assert "error: pipeline failed: stage 'train' failed: ValueError: planted failure" in (
        broken.stderr
    )
    md5 = (tmp_path / "broken.md").read_text()  # for the pull-request comment
    assert md5.startswith("## Model CI: clf — pipeline failed")
    assert "stage 'train' failed: ValueError: planted failure in training" in md5


def test_ci_usage_errors_exit_2(pipe, tmp_path, child_env):
    bad = _ci(child_env, tmp_path, "--pipeline", str(tmp_path), "--model", "clf")
    assert bad.returncode == 2 and "not an exported pipeline" in bad.stderr
    nofile = ["--pipeline", str(pipe), "--model", "clf", "--rules", "missing.toml"]
    assert _ci(child_env, tmp_path, *nofile).returncode == 2
    unknown = _ci(child_env, tmp_path, "--pipeline", str(pipe), "--model", "c", "--params", "zz=1")
    assert unknown.returncode == 2 and "unknown parameter 'zz'" in unknown.stderr


def _ci_calls(doc: object) -> list[str]:
    """Every shell line of a CI file that calls `mlops-jupyter ci`, continuations joined."""
    texts: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            texts.append(node)

    walk(doc)
    calls = []
    for t in texts:
        for line in t.replace("\\\n", " ").splitlines():
            if re.search(r"\bmlops-jupyter (--store \S+ )?ci\b", line):
                calls.append(line.strip())
    return calls


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_documented_ci_workflows_call_the_command_with_valid_options(name):
    from mlops_jupyter.cli import build_parser

    doc = yaml.safe_load((EXAMPLES / name).read_text())
    calls = _ci_calls(doc)
    assert calls, f"{name} never runs mlops-jupyter ci"
    for line in calls:
        argv = shlex.split(line.split("mlops-jupyter", 1)[1].split("||")[0].split(";")[0])
        ns = build_parser().parse_args(argv)  # argparse exits on an unknown option
        assert ns.command == "ci" and ns.pipeline and ns.model and ns.out
    text = (EXAMPLES / name).read_text()
    assert "MLOPS_JUPYTER_STORE" in text and "MLOPS_JUPYTER_TOKEN" in text
    assert ("gh pr comment" in text) if name.startswith("github") else ("/notes" in text)
