"""`mlops-jupyter ci --pipeline PIPE --model NAME [--data EVAL] [--rules rules.toml]
[--out summary.md] [--register]`: CI for models.

Runs the exported pipeline (cached stages reused, as `python -m PIPE` does), takes the
model version it produced (registered by a stage, or registered here from a stage output
with `--register`), gates it against production on the store, and writes a Markdown
summary for a pull-request comment with PNG plots next to it. Exit 0 when the gate passes,
1 when it fails, 2 on a usage error or a failed pipeline (with the stage's error)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError

__all__ = ["CIResult", "PipelineFailed", "StageInfo", "add_parser", "cmd_ci", "run_ci"]


class PipelineFailed(MlopsJupyterError):
    """The pipeline stopped: the message carries the stage's error."""


@dataclass
class StageInfo:
    """One stage of the pipeline run: "ran" or "cached", its run, and how long it took
    (for a cached stage, the time of the run that produced the cached result)."""

    name: str
    status: str
    run_id: str | None
    seconds: float | None
    source_run: str | None = None  # the run that produced the outputs (itself, if it ran)
    cache_key: str | None = None


@dataclass
class CIResult:
    """What `run_ci` did: the pipeline run, its stages, the candidate and the gate."""

    pipeline: str
    pipeline_run: str | None
    stages: list[StageInfo]
    model: str
    candidate: int
    registered_here: bool
    report: Any  # GateReport
    training_run: str | None
    seconds: float
    plots: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.report.passed)


# -- the pipeline ------------------------------------------------------------------------
def _import_pipeline(pipeline: str) -> tuple[str, Path]:
    """(package name, package folder) of PIPE: a folder holding pipeline.py, or the name of
    an importable package (from the current folder, as `python -m PIPE` finds it)."""
    p = Path(pipeline).expanduser()
    if p.is_dir():
        if not (p / "pipeline.py").is_file():
            raise InvalidInputError(f"{p} is not an exported pipeline (no pipeline.py)")
        p = p.resolve()
        parent = str(p.parent)
        if parent not in sys.path:
            sys.path.insert(0, parent)
        name = p.name
    else:
        name = pipeline
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
    if not name.isidentifier():
        raise InvalidInputError(f"pipeline package name must be an identifier, got {name!r}")
    try:
        mod = importlib.import_module(f"{name}.pipeline")
    except ModuleNotFoundError as e:
        if e.name not in (name, f"{name}.pipeline"):
            raise PipelineFailed(f"pipeline {name!r} could not be imported: {e}") from e
        raise InvalidInputError(
            f"no exported pipeline {pipeline!r}: give its folder (made by mlops-jupyter export)"
        ) from None
    return name, Path(mod.__file__).resolve().parent


def _stages(experiment: str, parent: str | None) -> list[StageInfo]:
    """The stage runs under the pipeline's run, in order, with cached/ran and times (read
    through the tracking API, so a tracking server as the team store works too)."""
    from ..tracking.api import get_run, runs

    if parent is None:
        return []
    df = runs(experiment)
    kids = df.filter(df["parent_id"] == parent).sort("start_time")["id"].to_list()
    out = []
    for uid in kids:
        d = get_run(uid)
        tags = d.get("tags") or {}
        stage = tags.get("mlops.stage")
        if not stage:
            continue  # a nested notebook run inside a stage
        cached = tags.get("mlops.cache") == "hit"
        source = tags.get("mlops.cached_from") if cached else uid
        secs = tags.get("mlops.duration_s")
        if cached and source:
            with contextlib.suppress(MlopsJupyterError):
                secs = (get_run(source).get("tags") or {}).get("mlops.duration_s")
        out.append(
            StageInfo(
                str(stage),
                "cached" if cached else "ran",
                uid,
                float(secs) if secs is not None else d.get("duration_s"),
                source,
                tags.get("mlops.cache_key"),
            )
        )
    return out


def _stage_output(pkg: str, pkgdir: Path, stages: list[StageInfo], output: str) -> Any:
    """The value of a stage output named `output` (the last stage producing it), read
    from the pipeline's stage cache."""
    from ..export import serialize
    from ..export.cache import StageCache

    pipe = importlib.import_module(f"{pkg}.pipeline")
    producers = [s.name for s in pipe.STAGES if output in s.outputs]
    if not producers:
        names = sorted({o for s in pipe.STAGES for o in s.outputs})
        raise InvalidInputError(
            f"no stage of the pipeline outputs {output!r}; outputs: {', '.join(names) or '-'}"
        )
    info = {s.name: s for s in stages}.get(producers[-1])
    sc = StageCache(None, pkgdir)
    man = sc.lookup(producers[-1], info.cache_key) if info and info.cache_key else None
    if man is None or output not in man.get("outputs", {}):
        raise InvalidInputError(f"stage {producers[-1]!r} left no cached {output!r}")
    return serialize.load(sc.folder(producers[-1], info.cache_key), man["outputs"][output])


def _candidate(model: str, stages: list[StageInfo], parent: str | None) -> tuple[int, str] | None:
    """(version, run) of the newest version of `model` registered by this pipeline run's
    stages, or by the runs whose cached results it reused."""
    from ..registry import versions
    from ..store.registry import ModelNotFoundError

    runs = {s.run_id for s in stages} | {s.source_run for s in stages} | {parent}
    runs.discard(None)
    try:
        df = versions(model)
    except ModelNotFoundError:
        return None
    rows = [r for r in df.iter_rows(named=True) if r["run_id"] in runs]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["version"])
    return int(best["version"]), str(best["run_id"])


# -- the whole thing ---------------------------------------------------------------------
def run_ci(
    pipeline: str,
    model: str,
    *,
    params: dict[str, str] | None = None,
    data: Any = None,
    rules: str | None = None,
    out: str | Path = "ci-summary.md",
    register: bool = False,
    model_output: str = "model",
    data_output: str = "eval_data",
    target: str | None = None,
    baseline: Any = "production",
    trusted: bool = False,
    plots: bool = True,
    quiet: bool = False,
    slices: list[str] | None = None,
) -> CIResult:
    """Run the pipeline, find (or register) the candidate, gate it, write the summary.
    `slices`: columns of the evaluation data to report metrics per value of (else the
    rules file's). Raises PipelineFailed when a stage fails, InvalidInputError on a usage
    error."""
    from ..export.runtime import StageFailed, run_pipeline
    from ..registry import _check_name, register_model
    from . import gate, not_worse
    from .ci_report import write_summary
    from .cli import load_rules

    _check_name(model)
    t0 = time.perf_counter()
    spec: dict[str, Any] = {
        "rules": [],
        "target": None,
        "features": None,
        "predict": None,
        "slices": None,
    }
    if rules:
        spec = load_rules(rules)  # before the pipeline: a bad rules file is a usage error
    else:
        spec["rules"] = [not_worse("accuracy", by=0.0)]
    if data is not None and not (isinstance(data, str) and data.startswith("dv-")):
        if not Path(data).expanduser().is_file():
            raise InvalidInputError(f"no such evaluation data file: {data}")
    pkg, pkgdir = _import_pipeline(pipeline)
    try:
        summary = run_pipeline(pkg, params or {}, quiet=quiet)
    except StageFailed as e:
        from .ci_report import write_failure

        # the pull-request comment should say why: the stage's error, as a summary too
        write_failure(model, pkg, str(e), Path(out).expanduser())
        raise PipelineFailed(str(e)) from None
    parent = summary.get("run")
    pipe = importlib.import_module(f"{pkg}.pipeline")
    stages = _stages(getattr(pipe, "EXPERIMENT", "default"), parent)
    found = None if register else _candidate(model, stages, parent)
    registered_here = False
    if found is None:
        if not register:
            raise InvalidInputError(
                f"the pipeline registered no version of {model!r}: register it in a stage "
                f"(mj.register_model) or pass --register to register its {model_output!r} output"
            )
        obj = _stage_output(pkg, pkgdir, stages, model_output)
        producer = next(
            (s for s in reversed(stages) if s.name in _producers(pkg, model_output)), None
        )
        run = producer.source_run if producer else parent
        version = register_model(model, obj, run=run)
        found = (version, run)
        registered_here = True
    version, train_run = found
    if data is None:
        data = _stage_output(pkg, pkgdir, stages, data_output)
    report = gate(
        model,
        version,
        data,
        spec["rules"],
        baseline=baseline,
        target=target or spec["target"] or "y",
        features=spec["features"],
        predict=spec["predict"],
        trusted=trusted,
        slices=slices or spec.get("slices"),
    )
    res = CIResult(
        pipeline=str(getattr(pipe, "NAME", pkg)),
        pipeline_run=parent,
        stages=stages,
        model=model,
        candidate=version,
        registered_here=registered_here,
        report=report,
        training_run=train_run,
        seconds=time.perf_counter() - t0,
    )
    write_summary(res, Path(out).expanduser(), plots=plots)
    return res


def _producers(pkg: str, output: str) -> set[str]:
    pipe = importlib.import_module(f"{pkg}.pipeline")
    return {s.name for s in pipe.STAGES if output in s.outputs}


# -- command line ------------------------------------------------------------------------
def _params(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise InvalidInputError(f"--params expects NAME=VALUE, got {item!r}")
        out[k.strip()] = v
    return out


def cmd_ci(args: argparse.Namespace) -> int:
    """Exit 0: the gate passed; 1: it failed; 2: usage error or the pipeline failed."""
    from ..cli_format import safe

    try:
        res = run_ci(
            args.pipeline,
            args.model,
            params=_params(args.params),
            data=args.data,
            rules=args.rules,
            out=args.out,
            register=args.register,
            model_output=args.model_output,
            data_output=args.data_output,
            target=args.target,
            baseline=None if args.baseline == "none" else args.baseline,
            trusted=args.trusted,
            plots=not args.no_plots,
            quiet=args.quiet,
            slices=args.slice,
        )
    except PipelineFailed as e:
        print(f"error: pipeline failed: {safe(e)}", file=sys.stderr)
        return 2
    text = Path(args.out).expanduser().read_text(encoding="utf-8")
    print("\n".join(safe(line) for line in text.splitlines()))
    print(f"wrote {safe(args.out)}", file=sys.stderr)
    return 0 if res.passed else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `ci`."""
    p = sub.add_parser(
        "ci",
        help="run an exported pipeline, gate its model against production, write a PR summary",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pipeline", required=True, help="the exported pipeline's folder")
    p.add_argument(
        "--params",
        "--param",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline parameters for this run (as python -m PIPE --param)",
    )
    p.add_argument("--model", required=True, help="registered model name of the candidate")
    p.add_argument(
        "--data",
        help="evaluation data (.parquet/.csv/.arrow/.npz or a data version id); default: "
        "the pipeline's --data-output",
    )
    p.add_argument("--rules", help="rules file (.toml [[rule]] tables or .py with RULES)")
    p.add_argument("--out", default="ci-summary.md", help="Markdown summary (ci-summary.md)")
    p.add_argument(
        "--register",
        action="store_true",
        help="register the pipeline's --model-output as a new version (else a stage must)",
    )
    p.add_argument("--model-output", default="model", help="stage output to register (model)")
    p.add_argument(
        "--data-output", default="eval_data", help="stage output used without --data (eval_data)"
    )
    p.add_argument("--target", help="target column (default: the rules file's, else y)")
    p.add_argument(
        "--baseline", default="production", help="production (default), a version, alias, none"
    )
    p.add_argument("--trusted", action="store_true", help="allow unpickling your own classes")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.add_argument(
        "--slice",
        action="append",
        metavar="COLUMN",
        help="also report metrics per value of this column of the evaluation data (repeatable)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no pipeline progress display")
    p.set_defaults(func=cmd_ci)
