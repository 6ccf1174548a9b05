"""What an exported pipeline imports at run time: the stage spec, the runner behind
`python -m PIPELINE`, stage caching and tracking, and `stage_run` for tracking calls.

Caching (cache.py): a stage's key covers its code, params, input versions and the random
state it starts from; an unchanged key is not executed again, so a failed run resumes at
the failed stage. The cache is a folder or object storage (`--cache-dir s3://bucket/prefix`
or MLOPS_JUPYTER_PIPELINE_CACHE), which workers on different machines share."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tracking
from ..data.autolog import suspended as autolog_suspended
from ..errors import InvalidInputError, MlopsJupyterError
from . import params as P
from . import rngstate, serialize
from .cache import StageCache, code_hash, stage_key
from .progress import Progress
from .runtrack import copy_metrics, end_nested, event, gather, save_state
from .stagerun import (
    StageRun,
    _in_stage,
    display,
    notebook_run,
    show_result,
    stage_run,
    use_globals,
)

__all__ = [
    "Stage",
    "StageFailed",
    "StageRun",
    "display",
    "main",
    "notebook_run",
    "run_pipeline",
    "run_task",
    "show_result",
    "stage_run",
    "use_globals",
]


@dataclass(frozen=True)
class Stage:
    """One stage: `stages/<name>.py` with `<func>(inputs..., *, params...) -> {outputs}`."""

    name: str
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> producing stage
    outputs: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    uses: list[str] = field(default_factory=list)  # other stage modules it imports helpers from
    func: str = "run"
    run_name: str | None = None  # name of the stage's run (the notebook's run name, if any)


class StageFailed(MlopsJupyterError):
    """A stage raised; the message names the stage, the error and how to resume."""


# -- running -----------------------------------------------------------------------------
def resolve_params(
    pkgdir: Path, declared: dict[str, Any], overrides: dict[str, str] | None
) -> dict[str, Any]:
    """params.yaml (falling back to the exported defaults) with `--param` overrides."""
    f = pkgdir / "params.yaml"
    values = dict(declared)
    if f.is_file():
        for k, v in P.load(f).items():
            # a hand edit is held to the parameters cell's types, like a --param override
            values[k] = P.check(k, v, declared[k], str(f)) if k in declared else v
    for k, raw in (overrides or {}).items():
        if k not in values:
            known = ", ".join(values) or "(none)"
            raise InvalidInputError(f"unknown parameter {k!r}; the pipeline has: {known}")
        values[k] = P.coerce(k, raw, values[k]) if isinstance(raw, str) else raw
    return values


def run_pipeline(
    package: str,
    overrides: dict[str, Any] | None = None,
    *,
    force: bool | list[str] = False,
    only: list[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or reuse from cache) every stage of the exported pipeline `package`.

    `only`: run just these stages, reading other stages' outputs from the cache (how an
    Airflow task runs one stage). `force`: True to ignore the cache, or the names of the
    stages to re-run. `cache_dir`: a folder or an s3://, gs://, az:// URL (default:
    MLOPS_JUPYTER_PIPELINE_CACHE, else PIPELINE/.cache). Returns a summary dict; raises
    StageFailed."""
    pipe = importlib.import_module(f"{package}.pipeline")
    pkgdir = Path(pipe.__file__).resolve().parent
    stages: list[Stage] = list(pipe.STAGES)
    values = resolve_params(pkgdir, dict(pipe.PARAMS), overrides)
    sc = StageCache(cache_dir, pkgdir)
    cache = sc.root  # local: the cache itself, or the mirror of an object-storage cache
    name = getattr(pipe, "NAME", package)
    for what, names in (("--stage", only), ("--force", force if isinstance(force, list) else [])):
        unknown = set(names or []) - {s.name for s in stages}
        if unknown:
            known = ", ".join(s.name for s in stages)
            raise InvalidInputError(f"{what}: no stage named {sorted(unknown)}; stages: {known}")
    todo = [s for s in stages if not only or s.name in only]
    if only:  # the stages before it too: they pass on the global random state
        last = max(i for i, s in enumerate(stages) if s.name in only)
        needed = _upstream(stages, only) | {s.name for s in stages[: last + 1]}
    else:
        needed = {s.name for s in stages}
    prog = Progress(len(todo), max(len(s.name) for s in stages), quiet=quiet)
    state_file = cache / "last_run.json"
    prev = None
    try:
        prev = json.loads(state_file.read_text())
    except (OSError, ValueError):
        pass
    run_tags = {
        "mlops.pipeline": name,
        "mlops.kind": "pipeline",
        "mlops.source_notebook": getattr(pipe, "SOURCE_NOTEBOOK", None),
        **({"mlops.source_run": pipe.SOURCE_RUN} if getattr(pipe, "SOURCE_RUN", None) else {}),
        **(tags or {}),
    }
    if prev and prev.get("status") == "failed" and not only:
        run_tags["mlops.resumed_from"] = prev.get("stage")
    parent = None
    if not only:
        parent = tracking.start_run(
            name,
            getattr(pipe, "EXPERIMENT", "default"),
            params=values,
            tags=run_tags,
            _prev_run=prev.get("run") if prev and prev.get("status") == "failed" else None,
        )
        prog.header(f"pipeline {name}: {len(todo)} stages (run {parent.id})")
    located: dict[tuple[str, str], tuple[Path, dict]] = {}
    rng: tuple[Path, dict] | None = None  # random state left by the previous stage
    summary: dict[str, Any] = {"run": parent.id if parent else None, "stages": {}}
    i = 0
    try:
        for st in stages:
            if st.name not in needed:
                continue
            inputs_v = {}
            for inp, src in st.inputs.items():
                if (src, inp) not in located:
                    raise StageFailed(
                        f"stage {st.name!r} needs `{inp}` from stage {src!r}, which has no "
                        "cached result for these parameters; run that stage first"
                    )
                inputs_v[inp] = located[(src, inp)][1]["version"]
            used = {p: values[p] for p in st.params}
            rng_v = rng[1]["version"] if rng else None
            key = stage_key(code_hash(pkgdir, st), used, inputs_v, rng_v)
            folder = sc.folder(st.name, key)
            forced = force is True or (isinstance(force, list) and st.name in force)
            man = None if forced else sc.lookup(st.name, key)
            runs_it = not only or st.name in only
            if not runs_it:
                if man is None:
                    raise StageFailed(
                        f"stage {st.name!r} has no cached result for these parameters; "
                        "run its task (or the whole pipeline) first"
                    )
                for out, entry in man["outputs"].items():
                    located[(st.name, out)] = (folder, entry)
                rng = (folder, man["rng"]) if man.get("rng") else None
                continue
            i += 1
            stage_tags = {
                "mlops.stage": st.name,
                "mlops.pipeline": name,
                "mlops.cache_key": key,
                "mlops.cache": "hit" if man else "miss",
                **(tags if only and tags else {}),
            }
            if man is not None:
                if man.get("run"):
                    stage_tags["mlops.cached_from"] = man["run"]
                with tracking.start_run(
                    st.run_name or st.name, getattr(pipe, "EXPERIMENT", "default"), used, stage_tags
                ) as srun:
                    copy_metrics(man.get("run"), srun)
                    gather(man.get("run"), parent, values, srun)
                for out, entry in man["outputs"].items():
                    located[(st.name, out)] = (folder, entry)
                rng = (folder, man["rng"]) if man.get("rng") else None
                prog.cached(i, st.name)
                summary["stages"][st.name] = "cached"
                continue
            exp = getattr(pipe, "EXPERIMENT", "default")
            man = _execute(package, st, i, prog, used, key, sc, located, rng, exp, stage_tags)
            gather(man["run"], parent, values)
            for out, entry in man["outputs"].items():
                located[(st.name, out)] = (folder, entry)
            rng = (folder, man["rng"])
            summary["stages"][st.name] = "ran"
    except StageFailed as e:
        prog.close()
        summary["failed"] = getattr(e, "stage", None)
        gather(getattr(e, "run_id", None), parent, values)
        save_state(state_file, parent, "failed", summary["failed"])
        if parent is not None:
            parent.set_tags({"mlops.failed_stage": summary["failed"] or ""})
            parent.end("failed")
        raise
    except BaseException as e:
        prog.close()
        save_state(state_file, parent, "failed", None)
        if parent is not None:
            parent.end("killed" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    prog.close()
    save_state(state_file, parent, "finished", None)
    if parent is not None:
        ran = sum(v == "ran" for v in summary["stages"].values())
        parent.set_tags({"mlops.stages_run": ran, "mlops.stages_cached": len(todo) - ran})
        parent.end("finished")
        prog.header(f"pipeline {name} finished: {ran} run, {len(todo) - ran} cached")
    return summary


def _upstream(stages: list[Stage], only: list[str]) -> set[str]:
    """The stages in `only` and every stage whose outputs they need, transitively."""
    by_name = {s.name: s for s in stages}
    seen: set[str] = set()
    todo = list(only)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += list(by_name[n].inputs.values())
    return seen


def _execute(
    package: str,
    st: Stage,
    i: int,
    prog: Progress,
    used: dict[str, Any],
    key: str,
    sc: StageCache,
    located: dict[tuple[str, str], tuple[Path, dict]],
    rng: tuple[Path, dict] | None,
    experiment: str,
    stage_tags: dict[str, Any],
) -> dict:
    """Run one stage in this process, inside its own child run, and cache its outputs."""
    folder = sc.folder(st.name, key)
    prog.start(i, st.name)
    t0 = time.perf_counter()
    with tracking.start_run(st.run_name or st.name, experiment, used, stage_tags) as srun:
        token = _in_stage.set(True)
        try:
            try:
                # loading the module runs its imports (and the code they depend on, such
                # as sys.path changes): inside the error handling, like the stage itself
                mod = importlib.import_module(f"{package}.stages.{st.name}")
                fn = getattr(mod, st.func)
                with autolog_suspended():  # the pipeline's own cache is not a data input
                    args = serialize.load_all({n: located[(s, n)] for n, s in st.inputs.items()})
                    start = rngstate.load(*rng) if rng else None
                given = {**args, **used}
                accepts = inspect.signature(fn).parameters
                for k, v in given.items():
                    if k not in accepts:  # a notebook variable functions read: a global
                        setattr(mod, k, v)
                rngstate.restore(start)
                result = fn(**{k: v for k, v in given.items() if k in accepts})
                if inspect.iscoroutine(result):  # a stage with top-level `await`
                    result = asyncio.run(result)
                end_state = rngstate.capture()
            finally:
                end_nested(srun)
        except Exception as e:
            dt = time.perf_counter() - t0
            prog.failed(i, st.name, dt)
            # the user's frames only: the first one is this runner calling the stage
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next))
            where = _stage_frame(e, package, st.name)
            msg = (
                f"stage {st.name!r} failed: {type(e).__name__}: {e}{where}. Earlier stages are "
                f"cached: fix the problem and run the pipeline again to resume at {st.name!r}."
            )
            sys.stderr.write(tb)
            sys.stderr.write(f"error: {msg}\n")
            event(srun, msg, tb)
            srun.end("failed")
            err = StageFailed(msg)
            err.stage = st.name  # type: ignore[attr-defined]
            err.run_id = srun.id  # type: ignore[attr-defined]
            raise err from e
        finally:
            _in_stage.reset(token)
        dt = time.perf_counter() - t0
        tmp = serialize.atomic_dir(folder)
        try:
            outputs = _check_outputs(st, result)
            with autolog_suspended():
                entries = serialize.save_all(outputs, tmp)
            _share_unchanged(st, entries, located, tmp, folder)
            man = {
                "stage": st.name,
                "key": key,
                "run": srun.id,
                "created": time.time(),
                "duration_s": dt,
                "params": used,
                "outputs": entries,
                "rng": rngstate.save(end_state, tmp),
            }
            (tmp / "manifest.json").write_text(json.dumps(man, indent=1, default=str))
            sc.publish(st.name, key, tmp)  # object storage: before it counts as cached here
        except MlopsJupyterError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            prog.failed(i, st.name, dt)
            msg = f"stage {st.name!r} ran but its outputs could not be stored: {e}"
            sys.stderr.write(f"error: {msg}\n")
            event(srun, msg, "")
            srun.end("failed")
            err = StageFailed(msg)
            err.stage = st.name  # type: ignore[attr-defined]
            raise err from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            srun.end("failed")
            raise
        serialize.commit_dir(tmp, folder)
        sc.prune(st.name, key)
        srun.set_tags({"mlops.duration_s": round(dt, 6)})
    prog.done(i, st.name, dt, list(outputs))
    return man


def _share_unchanged(
    st: Stage,
    entries: dict[str, dict],
    located: dict[tuple[str, str], tuple[Path, dict]],
    tmp: Path,
    folder: Path,
) -> None:
    """An output the stage may have changed in place (it was also an input) but did not:
    same content hash, so keep no second copy; the entry points at the input's file."""
    for name, entry in entries.items():
        src = st.inputs.get(name)
        if src is None or entry.get("key") is not None or (src, name) not in located:
            continue
        src_folder, src_entry = located[(src, name)]
        if src_entry.get("key") is None and (src_entry["version"], src_entry["format"]) == (
            entry["version"],
            entry["format"],
        ):
            (tmp / entry["file"]).unlink(missing_ok=True)
            # relative to the stage's final folder: the cache can move as a whole
            entry["file"] = os.path.relpath(src_folder / src_entry["file"], folder)


def _check_outputs(st: Stage, result: Any) -> dict[str, Any]:
    if not st.outputs:
        return {}
    if not isinstance(result, dict):
        raise InvalidInputError(
            f"stage {st.name!r} must return a dict of its outputs {st.outputs}, "
            f"got {type(result).__name__}"
        )
    missing = [o for o in st.outputs if o not in result]
    if missing:
        raise InvalidInputError(f"stage {st.name!r} did not return {missing}")
    return {o: result[o] for o in st.outputs}


def _stage_frame(e: BaseException, package: str, stage: str) -> str:
    """` (stages/train.py, line 12)` for the innermost frame in the stage module."""
    where = ""
    for fr in traceback.extract_tb(e.__traceback__):
        if fr.filename.endswith(os.path.join("stages", f"{stage}.py")):
            where = f" (stages/{stage}.py, line {fr.lineno})"
    return where


def run_task(package: str, stage: str, **context: Any) -> dict[str, Any]:
    """Airflow task callable: run one stage; upstream outputs come from the cache.

    The DAG run's params override params.yaml; the Airflow run id is tagged on the run."""
    params = {k: v for k, v in dict(context.get("params") or {}).items()}
    tags = {"airflow.run_id": str(context["run_id"])} if context.get("run_id") else {}
    return run_pipeline(package, params, only=[stage], tags=tags)


# -- command line ------------------------------------------------------------------------
def _parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise InvalidInputError(f"--param expects NAME=VALUE, got {item!r}")
        out[k.strip()] = v
    return out


def main(package: str, argv: list[str] | None = None) -> int:
    """`python -m PIPELINE [--param k=v ...] [--force] [--list]`."""
    pipe = importlib.import_module(f"{package}.pipeline")
    p = argparse.ArgumentParser(
        prog=f"python -m {package}",
        description=(pipe.__doc__ or "").strip().splitlines()[0] if pipe.__doc__ else None,
    )
    p.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a parameter of params.yaml for this run (repeatable)",
    )
    p.add_argument(
        "--force",
        nargs="*",
        metavar="STAGE",
        help="re-run these stages (all when none is named) instead of using the cache",
    )
    p.add_argument("--stage", action="append", help="run only this stage (others from cache)")
    p.add_argument(
        "--store", help="tracking store (default: nearest .mlops/ or $MLOPS_JUPYTER_STORE)"
    )
    p.add_argument(
        "--cache-dir",
        help="where stage outputs are cached: a folder, or s3://, gs://, az:// URL shared by "
        "workers (default: $MLOPS_JUPYTER_PIPELINE_CACHE, else PIPELINE/.cache)",
    )
    p.add_argument("--list", action="store_true", help="show stages, inputs and outputs, then exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    args = p.parse_args(argv)
    try:
        if args.store:
            tracking.set_store(args.store)
        if args.list:
            print(describe(pipe))
            return 0
        run_pipeline(
            package,
            _parse_overrides(args.param),
            force=True if args.force == [] else (args.force or False),
            only=args.stage,
            cache_dir=args.cache_dir,
            quiet=args.quiet,
        )
    except StageFailed:
        return 1
    except KeyboardInterrupt:
        print("interrupted: completed stages are cached; run again to resume", file=sys.stderr)
        return 130
    except MlopsJupyterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def describe(pipe: Any) -> str:
    """Human-readable DAG of a pipeline module."""
    lines = [f"pipeline {getattr(pipe, 'NAME', '?')} (params: {', '.join(pipe.PARAMS) or '-'})"]
    for s in pipe.STAGES:
        ins = ", ".join(f"{n}<-{src}" for n, src in s.inputs.items()) or "-"
        lines.append(
            f"  {s.name}: inputs {ins}; params {', '.join(s.params) or '-'}; "
            f"outputs {', '.join(s.outputs) or '-'}"
        )
    return "\n".join(lines)
