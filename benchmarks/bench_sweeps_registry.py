"""Sweeps, registry and checkpoints: overhead against the plain libraries underneath.

    python benchmarks/bench_sweeps_registry.py [--quick]

Figures (each printed with the peer and the ratio):
- per-trial cost of mj.sweep (child run, params, metrics, pruning reports) vs optuna's own
  study.optimize on the same journal-file storage;
- mj.log inside a trial (pruning tap) vs mj.log in a plain run;
- mj.checkpoint (atomic: temp + fsync + rename, manifest) vs a bare torch.save, and
  mj.resume vs torch.load + load_state_dict;
- register_model + load_model vs MLflow's log_model + register_model + load_model on a
  SQLite tracking store (if mlflow is installed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _t(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_sweep(n_trials: int) -> None:
    import optuna

    import mlops_jupyter as mj
    from mlops_jupyter.hpo import study_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def plain(trial):
        x = trial.suggest_float("x", -5, 5)
        for s in range(10):
            trial.report((x - 1) ** 2 + 1 / (s + 1), s)
        return (x - 1) ** 2

    def tracked(trial):
        x = trial.suggest_float("x", -5, 5)
        for s in range(10):
            mj.log(step=s, loss=(x - 1) ** 2 + 1 / (s + 1))
        return (x - 1) ** 2

    st = optuna.create_study(storage=study_storage(), sampler=optuna.samplers.RandomSampler(0))
    peer = _t(lambda: st.optimize(plain, n_trials=n_trials)) / n_trials
    ours = (
        _t(lambda: mj.sweep(tracked, n_trials=n_trials, sampler="random", seed=0, gate=False))
        / n_trials
    )
    print(
        f"sweep: {ours * 1e3:.1f} ms/trial (mj.sweep, child run + 10 logged+reported steps)  "
        f"vs optuna.optimize {peer * 1e3:.1f} ms/trial (same journal storage)  "
        f"ratio {ours / peer:.2f}x"
    )


def bench_log_in_trial(n: int) -> None:
    import optuna

    import mlops_jupyter as mj

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with mj.start_run("plain"):
        t0 = time.perf_counter()
        for _ in range(n):
            mj.log(acc=0.5)
        plain = (time.perf_counter() - t0) / n
    box = {}

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        mj.log(step=0, loss=1.0)  # the watched metric
        t0 = time.perf_counter()
        for _ in range(n):
            mj.log(acc=0.5)
        box["t"] = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for i in range(1, 201):
            mj.log(step=i, loss=1.0 / i)
        box["r"] = (time.perf_counter() - t0) / 200
        return 0.0

    mj.sweep(objective, n_trials=1, gate=False)
    print(
        f"mj.log in a trial: {box['t'] * 1e6:.2f} us/call vs {plain * 1e6:.2f} us in a plain run "
        f"(ratio {box['t'] / plain:.2f}x); a call of the watched metric, reported to optuna: "
        f"{box['r'] * 1e6:.0f} us"
    )


def bench_checkpoint(params_m: float) -> None:
    import torch

    import mlops_jupyter as mj

    width = int((params_m * 1e6 / 4) ** 0.5)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(4)])
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    n = sum(p.numel() for p in model.parameters())
    d = Path(tempfile.mkdtemp())
    payload = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    peer = _t(lambda: torch.save(payload, d / "plain.pt"), 3)
    ours = _t(
        lambda: mj.checkpoint(model=model, optimizer=opt, epoch=0, dir=d / "ck", keep_last=1), 3
    )
    size = (d / "plain.pt").stat().st_size / 1e6

    def load_plain():
        sd = torch.load(d / "plain.pt", weights_only=True)
        model.load_state_dict(sd["model"])
        opt.load_state_dict(sd["optimizer"])

    peer_l = _t(load_plain, 3)
    ours_l = _t(lambda: mj.resume(model=model, optimizer=opt, dir=d / "ck"), 3)
    print(
        f"checkpoint ({n / 1e6:.1f}M params + Adam, {size:.0f} MB): mj.checkpoint "
        f"{ours * 1e3:.0f} ms vs torch.save {peer * 1e3:.0f} ms (ratio {ours / peer:.2f}x, the "
        f"difference is fsync + rename); mj.resume {ours_l * 1e3:.0f} ms vs torch.load + "
        f"load_state_dict {peer_l * 1e3:.0f} ms (ratio {ours_l / peer_l:.2f}x)"
    )
    shutil.rmtree(d, ignore_errors=True)


def bench_registry(params_m: float) -> None:
    import torch

    import mlops_jupyter as mj

    width = int((params_m * 1e6 / 2) ** 0.5)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Linear(width, width))
    reg = _t(lambda: mj.register_model("bench", model), 3)
    load = _t(lambda: mj.load_model("bench"), 3)
    line = f"registry ({params_m:.0f}M params): register_model {reg * 1e3:.0f} ms, load_model {load * 1e3:.0f} ms"
    try:
        import mlflow
        import mlflow.pytorch
    except ImportError:
        print(line + " (mlflow not installed: no peer figure)")
        return
    import logging
    import warnings

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    d = Path(tempfile.mkdtemp())
    mlflow.set_tracking_uri(f"sqlite:///{d / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{d / 'mlflow.db'}")
    exp = mlflow.create_experiment("bench", artifact_location=(d / "art").as_uri())
    mlflow.set_experiment(experiment_id=exp)
    with mlflow.start_run():
        pass  # creating the tables is not part of the figure

    def ml_reg():
        with mlflow.start_run():
            info = mlflow.pytorch.log_model(model, name="m", serialization_format="pickle")
        mlflow.register_model(info.model_uri, "bench")

    ml_r = _t(ml_reg, 3)
    ml_l = _t(lambda: mlflow.pytorch.load_model("models:/bench/1"), 3)
    print(
        f"{line}  vs MLflow (sqlite) log_model+register_model {ml_r * 1e3:.0f} ms "
        f"(ratio {reg / ml_r:.2f}x), load_model {ml_l * 1e3:.0f} ms (ratio {load / ml_l:.2f}x)"
    )
    shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    os.environ["MLOPS_JUPYTER_STORE"] = os.path.join(tmp, "store.db")
    os.environ.setdefault("MLOPS_JUPYTER_TELEMETRY", "0")
    import mlops_jupyter as mj

    mj.set_store(None)
    q = args.quick
    bench_sweep(20 if q else 100)
    bench_log_in_trial(20_000 if q else 200_000)
    bench_checkpoint(2 if q else 10)
    bench_registry(2 if q else 10)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
