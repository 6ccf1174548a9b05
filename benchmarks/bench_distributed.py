"""Sweeps across processes: mj.sweep on a PostgreSQL store (optuna's RDBStorage in the
store's database, started here as in the tests: fsync off) against optuna alone.

    python benchmarks/bench_distributed.py            # full sizes (a few minutes)
    python benchmarks/bench_distributed.py --quick    # smaller sizes, for a smoke run

Figures:
- per-trial overhead of mj.sweep (child run, params, objective metric, heartbeat) over a
  bare `study.optimize` on the same RDBStorage, trivial objective (target <= 5 ms); the
  same pair on the SQLite store's journal file for reference;
- trials/s with workers=1, 2, 4 (fresh worker processes, start-up included) and on a Dask
  LocalCluster (2 worker processes, cluster start excluded), for a trivial objective and
  one that sleeps 50 ms (a stand-in for real work that leaves the CPU free);
- the example pipeline (notebooks/pipeline_example.ipynb) run by `airflow dags test` on a
  real Airflow 3 (.venv-airflow, `make airflow`; its database migration not counted)
  against `python -m PIPE`, each from an empty stage cache.
Nothing here is a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def trivial(trial):
    x = trial.suggest_float("x", -5, 5)
    return (x - 1) ** 2


def sleepy(trial):
    x = trial.suggest_float("x", -5, 5)
    time.sleep(0.05)
    return (x - 1) ** 2


def _use_store(location: str, artifacts: str | None) -> None:
    import mlops_jupyter as mj

    os.environ["MLOPS_JUPYTER_STORE"] = location
    if artifacts:
        os.environ["MLOPS_JUPYTER_ARTIFACTS"] = artifacts
    mj.set_store(None)


class _Statements:
    """Counts statements sent through psycopg (optuna's SQLAlchemy and our store both use
    it) and, with `server`, the transactions the database committed: round trips are what
    a trial costs on a database, and their count does not depend on the machine's load."""

    def __init__(self, server=None, db: str | None = None) -> None:
        self.server, self.db, self.n, self._orig = server, db, 0, {}
        self.x0 = self.xacts = 0

    def _xacts(self) -> int:
        if self.server is None:
            return 0
        import psycopg

        time.sleep(1.5)  # backends publish their counts at most once a second
        with psycopg.connect(self.server.url(self.db), autocommit=True) as c:
            row = c.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                (self.db,),
            ).fetchone()
        return int(row[0]) - 1  # less this connection's own query

    def __enter__(self) -> _Statements:
        try:
            import psycopg
        except ImportError:
            return self
        self.x0 = self._xacts()
        for name in ("execute", "executemany"):
            orig = getattr(psycopg.Cursor, name)
            self._orig[name] = orig

            def counted(cur, *a, _orig=orig, **k):
                self.n += 1
                return _orig(cur, *a, **k)

            setattr(psycopg.Cursor, name, counted)
        return self

    def __exit__(self, *exc) -> None:
        import psycopg

        for name, orig in self._orig.items():
            setattr(psycopg.Cursor, name, orig)
        self.xacts = self._xacts() - self.x0


def overhead(
    label: str, n: int, server=None, db: str | None = None, rounds: int = 1
) -> tuple[float, float]:
    """(ms/trial of mj.sweep, ms/trial of study.optimize) on the current store's storage;
    on PostgreSQL also statements and transactions per trial of each. `rounds` > 1: then
    as many more rounds of n/rounds trials each, bare and ours alternating, and the median
    of the per-round differences (a shared machine's load changes within a minute)."""
    import optuna

    import mlops_jupyter as mj
    from mlops_jupyter.hpo.distributed import storage_for

    storage = storage_for()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = optuna.create_study(
            study_name=f"bare-{label}", storage=storage, sampler=optuna.samplers.RandomSampler(0)
        )
        st.optimize(trivial, n_trials=3)  # warm: connections, tables
        with _Statements(server, db) as c_bare:
            t0 = time.perf_counter()
            st.optimize(trivial, n_trials=n)
            bare = (time.perf_counter() - t0) / n
        mj.sweep(trivial, n_trials=3, sampler="random", study=f"warm-{label}", gate=False)
        with _Statements(server, db) as c_ours:
            t0 = time.perf_counter()
            mj.sweep(
                trivial, n_trials=n, sampler="random", study=f"ours-{label}", gate=False, live=False
            )
            ours = (time.perf_counter() - t0) / n
    print(
        f"{label}: mj.sweep {ours * 1e3:.2f} ms/trial vs study.optimize {bare * 1e3:.2f} "
        f"ms/trial: overhead {(ours - bare) * 1e3:.2f} ms/trial (target <= 5 ms on PostgreSQL)",
        flush=True,
    )
    if server is not None:
        print(
            f"{label}: statements/trial mj.sweep {c_ours.n / n:.1f} vs study.optimize "
            f"{c_bare.n / n:.1f}; transactions/trial {c_ours.xacts / n:.1f} vs "
            f"{c_bare.xacts / n:.1f}",
            flush=True,
        )
    if rounds > 1:
        import statistics

        k = max(1, n // rounds)
        diffs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for r in range(rounds):
                t0 = time.perf_counter()
                st.optimize(trivial, n_trials=k)
                b = (time.perf_counter() - t0) / k
                t0 = time.perf_counter()
                mj.sweep(
                    trivial, n_trials=k, sampler="random", study=f"r{r}-{label}", gate=False,
                    live=False,
                )  # fmt: skip
                diffs.append(((time.perf_counter() - t0) / k - b) * 1e3)
        print(
            f"{label}: {rounds} alternating rounds of {k} trials: overhead median "
            f"{statistics.median(diffs):.2f} ms/trial ({', '.join(f'{d:.1f}' for d in diffs)})",
            flush=True,
        )
    return ours * 1e3, bare * 1e3


def throughput(objective, n: int, workers: list[int], client=None) -> dict[str, float]:
    import mlops_jupyter as mj

    out = {}
    name = objective.__name__
    for w in workers:
        t0 = time.perf_counter()
        mj.sweep(objective, n_trials=n, workers=w, study=f"tp-{name}-{w}", gate=False, live=False)
        out[f"workers={w}"] = n / (time.perf_counter() - t0)
    if client is not None:
        t0 = time.perf_counter()
        mj.sweep(objective, n_trials=n, cluster=client, study=f"tp-{name}-dask", gate=False)
        out["dask LocalCluster(2)"] = n / (time.perf_counter() - t0)
    print(
        f"{name} ({n} trials): " + ", ".join(f"{k} {v:.1f} trials/s" for k, v in out.items()),
        flush=True,
    )
    return out


def airflow_vs_python_m(tmp: Path) -> None:
    """Wall time of the example pipeline under `airflow dags test` and `python -m`."""
    import shutil
    import subprocess

    from mlops_jupyter.export import export_notebook

    af_py = ROOT / ".venv-airflow" / "bin" / "python"
    if not af_py.exists():
        print("no .venv-airflow (make airflow): no Airflow figure")
        return
    nb = ROOT / "notebooks" / "pipeline_example.ipynb"
    pipe = export_notebook(nb, tmp / "py" / "example_pipe")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "example_pipe", "-q"], cwd=pipe.path.parent, check=True)
    py_s = time.perf_counter() - t0
    home = tmp / "airflow-home"
    dags = home / "dags"
    dags.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
    )
    airflow = str(af_py.parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    export_notebook(nb, dags / "example_dag_pipe", target="airflow")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [airflow, "dags", "test", "example_dag_pipe"], env=env, capture_output=True, text=True
    )
    af_s = time.perf_counter() - t0
    ok = proc.returncode == 0 and "state=success" in proc.stdout + proc.stderr
    print(
        f"example pipeline: airflow dags test {af_s:.1f} s"
        f"{'' if ok else ' (FAILED)'} vs python -m {py_s:.1f} s: {af_s / py_s:.1f}x",
        flush=True,
    )
    shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--overhead-only", action="store_true", help="only the per-trial figures")
    ap.add_argument(
        "--rounds", type=int, default=1, help="also alternate bare/ours in this many rounds"
    )
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("MLOPS_JUPYTER_TELEMETRY", "0")
    n_over = 50 if args.quick else 300
    n_tp = 20 if args.quick else 80
    tmp = Path(tempfile.mkdtemp(prefix="mj-bench-dist-"))
    from pgserver import PgServer

    server = PgServer()
    try:
        _use_store(str(tmp / "sqlite" / "store.db"), None)
        overhead("sqlite journal", max(20, n_over // 5), rounds=args.rounds)
        url = server.new_database()
        _use_store(url, str(tmp / "artifacts"))
        overhead("postgresql", n_over, server, url.rsplit("/", 1)[-1].split("?")[0], args.rounds)
        if args.overhead_only:
            return
        client = cluster = None
        try:
            import distributed

            cluster = distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = distributed.Client(cluster)
        except ImportError:
            print("distributed not installed: no Dask figures")
        throughput(trivial, n_tp, [1, 2, 4], client)
        throughput(sleepy, n_tp, [1, 2, 4], client)
        if client is not None:
            client.close()
            cluster.close()
        _use_store(str(tmp / "pipe" / "store.db"), None)
        os.environ.pop("MLOPS_JUPYTER_ARTIFACTS", None)
        airflow_vs_python_m(tmp)
    finally:
        from mlops_jupyter.store.db import close_all

        close_all()
        server.close()


if __name__ == "__main__":
    main()
