"""Data-area benchmark, side by side with Evidently in the same run.

1. Drift report on 200,000 rows x (20 numeric + 5 categorical) per side: mj.drift with KS and
   chi-squared vs Evidently's DataDriftPreset(num_method="ks", cat_method="chisquare"),
   with the per-column verdicts compared.
2. Report size for 2k / 20k / 200k rows (ours must not grow with rows).
3. File fingerprint throughput from the page cache: xxh3-128 (ours) vs md5 (DVC's hash).

Run: python benchmarks/bench_data.py [--rows N] [--file-gb G] [--no-evidently]
     [--parts drift size fingerprint]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.data import fingerprint as fpr  # noqa: E402

NUM_SHIFTS = [0, 0, 0, 0, 0, 0.002, 0.005, 0.008, 0.01, 0.012, 0.015, 0.02, 0.03, 0.05, 0.1]
NUM_SCALES = [1.0, 1.01, 1.02, 1.05, 1.2]
CAT_P = [0.4, 0.3, 0.2, 0.1]
CAT_SHIFTED = [
    CAT_P,  # unchanged
    [0.402, 0.3, 0.2, 0.098],  # tiny shift (borderline)
    [0.41, 0.3, 0.19, 0.1],  # small shift
    [0.3, 0.3, 0.2, 0.2],  # big shift
    CAT_P,  # unchanged
]


def make(n: int, seed: int, current: bool) -> pl.DataFrame:
    """20 numeric columns (15 mean shifts, 5 scale changes, most near KS's detection limit)
    and 5 categorical ones; the reference has no shifts."""
    r = np.random.default_rng(seed)
    cols = {}
    for i, s in enumerate(NUM_SHIFTS):
        cols[f"num{i:02d}"] = r.normal(s if current else 0.0, 1.0, n)
    for j, sc in enumerate(NUM_SCALES):
        cols[f"num{15 + j:02d}"] = r.normal(0.0, sc if current else 1.0, n)
    for k, p in enumerate(CAT_SHIFTED):
        cols[f"cat{k}"] = r.choice(["a", "b", "c", "d"], n, p=p if current else CAT_P)
    return pl.DataFrame(cols)


def timed(fn, repeat: int) -> tuple[float, float, object]:
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts), out


def evidently_report(ref: pl.DataFrame, cur: pl.DataFrame):
    import pandas
    import pandas.core.dtypes.common as pdc

    # Evidently 0.7 imports a helper that pandas 3 removed; restore it so it can load
    if not hasattr(pdc, "infer_dtype_from_object"):
        pdc.infer_dtype_from_object = lambda dtype: pandas.api.types.pandas_dtype(dtype).type
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    num = [c for c in ref.columns if c.startswith("num")]
    cat = [c for c in ref.columns if c.startswith("cat")]
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    rp, cp = ref.to_pandas(), cur.to_pandas()

    def run():
        report = Report([DataDriftPreset(num_method="ks", cat_method="chisquare")])
        return report.run(
            current_data=Dataset.from_pandas(cp, data_definition=dd),
            reference_data=Dataset.from_pandas(rp, data_definition=dd),
        )

    return run


def evidently_verdicts(snapshot) -> dict[str, tuple[float, bool]]:
    out = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m["config"]
        if cfg.get("type", "").endswith("ValueDrift"):
            out[cfg["column"]] = (float(m["value"]), float(m["value"]) < cfg["threshold"])
    return out


def bench_drift(rows: int, with_evidently: bool) -> None:
    ref, cur = make(rows, 1, False), make(rows, 2, True)
    print(f"== drift report: {rows:,} rows x {ref.width} columns per side ==")
    best, med, rep = timed(
        lambda: mj.drift(ref, cur, num_method="ks", cat_method="chisquare", store=False), 7
    )
    print(
        f"mlops-jupyter mj.drift (KS / chi-squared, exact):  best {best:.3f} s, median {med:.3f} s"
    )
    best_s, med_s, _ = timed(lambda: mj.drift(ref, cur, num_method="ks", cat_method="chisquare"), 5)
    print(
        f"  ... storing versions + report in the store:      best {best_s:.3f} s, median {med_s:.3f} s"
    )
    best_a, med_a, rep_auto = timed(lambda: mj.drift(ref, cur, store=False), 5)
    print(
        f"  ... default methods (Wasserstein / Jensen-Shannon): best {best_a:.3f} s,"
        f" median {med_a:.3f} s (no KS p-value computed)"
    )
    print(f"  drifted: {rep.n_drifted}/{rep.data['n_columns']} columns")
    if not with_evidently:
        return
    try:
        run = evidently_report(ref, cur)
    except Exception as e:  # pragma: no cover - depends on the installed Evidently
        print(f"Evidently unavailable: {e}")
        return
    ev_best, ev_med, snap = timed(run, 2)
    print(
        f"Evidently DataDriftPreset(ks, chisquare):         best {ev_best:.3f} s, median {ev_med:.3f} s"
    )
    print(f"speed-up: {ev_best / best:.1f}x (best vs best)")
    ev = evidently_verdicts(snap)
    same, diff = 0, []
    for c in rep.columns:
        name = c["column"]
        e_val, e_drift = ev[name]
        if e_drift == c["drifted"]:
            same += 1
        else:
            diff.append((name, c["method"], c["statistic"], e_val))
    print(f"per-column verdicts: {same}/{len(rep.columns)} identical")
    for c in rep.columns:
        if c["method"] == "chisquare":
            print(
                f"  {c['column']}: chi-squared p-value ours (two-sample) {c['statistic']:.3g}"
                f" vs Evidently (goodness of fit) {ev[c['column']][0]:.3g}"
            )
    for name, method, ours, theirs in diff:
        print(f"  differs: {name} ({method}) p-value ours {ours:.4g} vs Evidently {theirs:.4g}")
    worst = max(
        (abs(c["statistic"] - ev[c["column"]][0]) for c in rep.columns if c["method"] == "ks"),
        default=0.0,
    )
    print(f"largest KS p-value difference: {worst:.2g}")


def bench_size() -> None:
    print("== report size vs rows ==")
    for n in (2_000, 20_000, 200_000):
        rep = mj.drift(make(n, 1, False), make(n, 2, True), store=False)
        print(
            f"{n:>8,} rows: HTML {len(rep._repr_html_()):,} bytes, JSON {len(str(rep.to_dict())):,} bytes"
        )


def bench_fingerprint(gb: float) -> None:
    size = int(gb * (1 << 30))
    print(f"== file fingerprint from page cache: {size / 1e9:.2f} GB file ==")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "blob.bin"
        block = np.random.default_rng(0).integers(0, 256, 1 << 24, dtype=np.uint8).tobytes()
        with open(p, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
        size = p.stat().st_size
        with open(p, "rb") as f:  # warm the page cache
            while f.read(1 << 24):
                pass

        def md5() -> str:
            h = hashlib.md5()
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            return h.hexdigest()

        ours, _, _ = timed(lambda: fpr.file_fingerprint(p, use_cache=False), 3)
        theirs, _, _ = timed(md5, 2)
        print(f"{fpr.ALGO} (mlops-jupyter): {size / ours / 1e9:.2f} GB/s")
        print(f"md5 (DVC's file hash):     {size / theirs / 1e9:.2f} GB/s")
        print(f"ratio: {theirs / ours:.1f}x")
        cached, _, _ = timed(lambda: fpr.file_fingerprint(p), 3)
        print(f"unchanged file again (stat cache): {cached * 1e6:.0f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--file-gb", type=float, default=1.0)
    ap.add_argument("--no-evidently", action="store_true")
    ap.add_argument(
        "--parts",
        nargs="+",
        choices=("drift", "size", "fingerprint"),
        default=["drift", "size", "fingerprint"],
        help="which parts to run (all by default)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        mj.set_store(os.path.join(d, "bench.db"))
        print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
        if "drift" in args.parts:
            bench_drift(args.rows, not args.no_evidently)
        if "size" in args.parts:
            bench_size()
        if "fingerprint" in args.parts:
            bench_fingerprint(args.file_gb)


if __name__ == "__main__":
    main()
