"""LLM evaluation throughput and memory (mj.llm_eval), side by side with Evidently's text
descriptors and MLflow's mlflow.evaluate where they are installed.

    python benchmarks/bench_llm_eval.py                 # everything
    python benchmarks/bench_llm_eval.py --n 1000 --skip-memory --skip-compare

- examples/s for N examples with the default offline metrics (packaged all-MiniLM-L6-v2 on
  CPU, torch limited to --threads threads), model load reported separately;
- the same examples through Evidently (TextLength, SentenceCount, WordCount, ...) and
  mlflow.evaluate(model_type="question-answering") run by the interpreter of --bench-venv
  (default .venv-bench, a separate venv so their dependencies do not touch the main one);
- peak RSS of a fresh process evaluating --memory-n examples (the table streams to parquet;
  the embedding model is swapped for a hashing embedder there, see the printed note).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUBJECTS = ["the Eiffel Tower", "photosynthesis", "SQLite", "Mount Everest", "the human heart",
            "Python", "the Moon", "the Nile", "jazz", "the printing press", "penicillin",
            "the Roman Empire", "volcanoes", "honey bees", "the Internet"]  # fmt: skip
FACTS = ["was first described in {y}", "is studied by {n} researchers every year",
         "is mentioned in {n} textbooks", "changed how people think about {w}",
         "is closely linked to {w}", "has a long history in {w}"]  # fmt: skip
WORDS = ["science", "travel", "medicine", "music", "engineering", "farming", "trade", "art"]


def make_examples(n: int, seed: int = 0) -> list[dict]:
    """Deterministic question/answer/reference/context rows of realistic length."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        s = SUBJECTS[i % len(SUBJECTS)]
        facts = [
            f.format(y=rng.randint(1500, 2020), n=rng.randint(10, 900), w=rng.choice(WORDS))
            for f in rng.sample(FACTS, 3)
        ]
        ctx = " ".join(f"{s[0].upper()}{s[1:]} {f}." for f in facts)
        ans = [f"{s[0].upper()}{s[1:]} {facts[0]}.", f"It {facts[1]}."]
        if i % 3 == 0:  # an unsupported claim in a third of the answers
            ans.append(f"It was invented by a committee in {rng.randint(1000, 1400)}.")
        rows.append(
            {
                "question": f"What do you know about {s} (item {i})?",
                "answer": " ".join(ans),
                "reference": f"{s[0].upper()}{s[1:]} {facts[0]}.",
                "context": ctx,
            }
        )
    return rows


def bench_ours(rows: list[dict], threads: int) -> dict:
    import polars as pl
    import torch

    torch.set_num_threads(threads)
    import mlops_jupyter as mj
    from mlops_jupyter.llm.embed import load_default

    t0 = time.perf_counter()
    load_default()
    load_s = time.perf_counter() - t0
    df = pl.DataFrame(rows)
    mj.llm_eval(df.head(32), log=False)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    res = mj.llm_eval(df, log=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    metrics = [m for m in res.summary["metric"] if m not in ("error_rate",)]
    # the like-for-like subset of what the peers compute: text statistics, no embeddings
    t0 = time.perf_counter()
    mj.llm_eval(df, metrics=["text_stats"], log=False)
    stats_s = time.perf_counter() - t0
    return {"n": len(rows), "seconds": dt, "examples_per_s": len(rows) / dt, "load_s": load_s,
            "cpu_s": cpu, "stats_examples_per_s": len(rows) / stats_s,
            "n_metrics": len(metrics), "metrics": metrics}  # fmt: skip


OTHERS = textwrap.dedent(
    """
    import json, sys, time, warnings, os
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = json.load(open(sys.argv[1]))
    threads = int(sys.argv[2])
    out = {}
    import pandas as pd
    df = pd.DataFrame(rows)
    try:
        import evidently
        from evidently import Dataset, DataDefinition
        from evidently import descriptors as D
        names = ["TextLength", "SentenceCount", "WordCount", "OOVWordsPercentage",
                 "NonLetterCharacterPercentage", "Sentiment"]
        ok, failed = [], {}
        for n in names:  # keep the descriptors that work offline here
            try:
                Dataset.from_pandas(df.head(5), data_definition=DataDefinition(text_columns=["answer"]),
                                    descriptors=[getattr(D, n)("answer")])
                ok.append(n)
            except Exception as e:
                failed[n] = f"{type(e).__name__}: {str(e)[:120]}"
        t0 = time.perf_counter()
        ds = Dataset.from_pandas(df, data_definition=DataDefinition(text_columns=["answer"]),
                                 descriptors=[getattr(D, n)("answer") for n in ok])
        ds.as_dataframe()
        dt = time.perf_counter() - t0
        out["evidently"] = {"version": evidently.__version__, "seconds": dt,
                            "examples_per_s": len(df) / dt, "metrics": ok, "failed": failed}
    except Exception as e:
        out["evidently"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    try:
        import mlflow, tempfile, logging
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        mlflow.set_tracking_uri("sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
        data = df.rename(columns={"question": "inputs", "reference": "ground_truth"})
        failed = {}
        try:  # the question-answering defaults (token_count, toxicity, readability, exact_match)
            with mlflow.start_run():
                mlflow.evaluate(data=data.head(5), predictions="answer", targets="ground_truth",
                                model_type="question-answering")
            kw = {"model_type": "question-answering"}
        except Exception as e:
            failed["question-answering defaults"] = f"{type(e).__name__}: {str(e)[:160]}"
            # what of those defaults runs offline here: the textstat readability metrics
            kw = {"extra_metrics": [mlflow.metrics.flesch_kincaid_grade_level(),
                                    mlflow.metrics.ari_grade_level()]}
        t0 = time.perf_counter()
        with mlflow.start_run():
            r = mlflow.evaluate(data=data, predictions="answer", targets="ground_truth", **kw)
        dt = time.perf_counter() - t0
        got = sorted(k for k in r.metrics)
        out["mlflow"] = {"version": mlflow.__version__, "seconds": dt,
                         "examples_per_s": len(df) / dt, "metrics": got, "failed": failed}
    except Exception as e:
        out["mlflow"] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    print("JSON" + json.dumps(out))
    """
)


def bench_others(rows: list[dict], venv: Path, threads: int) -> dict:
    py = venv / "bin" / "python"
    if not py.exists():
        return {"skipped": f"{venv} not found (python -m venv {venv} && {venv}/bin/pip install "
                "mlflow==3.17.2 evidently textstat)"}  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "rows.json"
        p.write_text(json.dumps(rows))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1")  # fmt: skip
        out = subprocess.run([str(py), "-c", OTHERS, str(p), str(threads)], capture_output=True,
                             text=True, timeout=900, env=env)  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("JSON")), None)
    if line is None:
        return {"error": out.stderr[-1500:]}
    return json.loads(line[4:])


MEMORY = textwrap.dedent(
    """
    import json, sys, time, zlib
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from bench_llm_eval import make_examples
    import polars as pl
    import mlops_jupyter as mj
    n, mode = int(sys.argv[1]), sys.argv[2]
    df = pl.DataFrame(make_examples(n))
    def hwm():  # peak RSS of this process (VmHWM; ru_maxrss would carry the parent's over)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    base = hwm()
    def hash_embed(texts):
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % 384] += 1.0
        return out
    emb = hash_embed if mode == "hash" else None
    if mode == "model":
        import torch; torch.set_num_threads(int(sys.argv[4]))
    t0 = time.perf_counter()
    res = mj.llm_eval(df, embedder=emb, log=False)
    dt = time.perf_counter() - t0
    peak = hwm()
    print("JSON" + json.dumps({"n": n, "mode": mode, "input_rss_mb": base, "peak_rss_mb": peak,
          "seconds": dt, "parquet_mb": res.path.stat().st_size / 2**20}))
    """
)


def bench_memory(n: int, mode: str, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", MEMORY, str(n), mode, str(Path(__file__).parent), str(threads)],
        capture_output=True, text=True, timeout=1800, env=env,
    )  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("JSON")), None)
    return json.loads(line[4:]) if line else {"error": out.stderr[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-n", type=int, default=100_000)
    ap.add_argument("--bench-venv", default=str(ROOT / ".venv-bench"))
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-model", action="store_true", help="also peak RSS with the model")
    args = ap.parse_args()
    rows = make_examples(args.n)

    mem = []
    if not args.skip_memory:  # first, from a parent that has not loaded the model
        runs = [(args.memory_n // 10, "hash"), (args.memory_n, "hash")]
        if args.memory_model:
            runs.append((args.n, "model"))
        mem = [bench_memory(n, mode, args.threads) for n, mode in runs]
    ours = bench_ours(rows, args.threads)
    print(f"mj.llm_eval: {ours['n']} examples in {ours['seconds']:.1f} s = "
          f"{ours['examples_per_s']:.1f} examples/s, CPU time {ours['cpu_s']:.1f} s "
          f"({ours['n_metrics']} scores per example, "
          f"{args.threads} threads; model load {ours['load_s']:.1f} s, once per process)")  # fmt: skip
    if not args.skip_compare:
        others = bench_others(rows, Path(args.bench_venv), args.threads)
        for name in ("evidently", "mlflow"):
            r = others.get(name, others)
            if "examples_per_s" in r:
                print(f"{name} {r['version']}: {r['examples_per_s']:.1f} examples/s "
                      f"({len(r['metrics'])} scores: {', '.join(r['metrics'])}); "
                      f"mj.llm_eval / {name} = {ours['examples_per_s'] / r['examples_per_s']:.2g}x; "
                      f"text_stats only {ours['stats_examples_per_s']:.0f} examples/s = "
                      f"{ours['stats_examples_per_s'] / r['examples_per_s']:.2f}x")  # fmt: skip
                if r.get("failed"):
                    print(f"  {name} descriptors that failed offline: {r['failed']}")
            else:
                print(f"{name}: not measured: {r}")
    for m in mem:
        if "error" in m:
            print(f"memory: failed: {m['error']}")
            continue
        print(f"memory: {m['n']} examples ({m['mode']} embedder): peak RSS {m['peak_rss_mb']:.0f} "
              f"MB (after imports and building the input frame {m['input_rss_mb']:.0f} MB), "
              f"{m['seconds']:.1f} s, table {m['parquet_mb']:.1f} MB parquet")  # fmt: skip


if __name__ == "__main__":
    main()
