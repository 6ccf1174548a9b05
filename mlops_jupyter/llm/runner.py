"""`llm_eval`: score LLM answers offline, per example and per run, and log them to the run."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..errors import InvalidInputError, MlopsJupyterError
from . import grounded as G
from . import inputs as I
from . import reference as R
from .judge import DEFAULT_TEMPLATE, check_template, run_judge
from .result import PRIMARY, EvalResult, bootstrap_ci
from .textstats import split_sentences, text_stats

EMBEDDING_METRICS = ("relevance", "similarity", "groundedness", "coherence")
REFERENCE_METRICS = ("exact_match", "token_f1", "rouge1", "rouge2", "rougeL", "bleu")
STAT_COLUMNS = ("n_chars", "n_words", "n_sentences", "flesch", "refusal")
METRICS = (*EMBEDDING_METRICS, *REFERENCE_METRICS, "text_stats")
_NEEDS = {
    "similarity": "reference",
    "groundedness": "context",
    **dict.fromkeys(REFERENCE_METRICS, "reference"),
}


def _select(metrics: Any, cols: dict[str, str]) -> list[str]:
    if metrics is None:
        return [m for m in METRICS if _NEEDS.get(m, "question") in cols]
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)) or not metrics:
        raise InvalidInputError("metrics must be None or a non-empty list of metric names")
    for m in metrics:
        if m not in METRICS:
            raise InvalidInputError(f"metrics: unknown metric {m!r}; known: {list(METRICS)}")
        need = _NEEDS.get(m)
        if need and need not in cols:
            raise InvalidInputError(f"metrics: {m!r} needs a {need!r} column in data")
    return list(dict.fromkeys(metrics))


def _columns_for(metrics: list[str], cols: dict[str, str], generating: bool, judged: bool):
    """Output schema of the per-example table."""
    schema: dict[str, Any] = {"row": pl.Int64, "question": pl.String, "answer": pl.String}
    for role in ("reference", "context"):
        if role in cols:
            schema[role] = pl.String
    if generating:
        schema |= {
            "latency_s": pl.Float64,
            "prompt_tokens": pl.Int64,
            "completion_tokens": pl.Int64,
        }
    for m in metrics:
        if m == "text_stats":
            schema |= dict.fromkeys(STAT_COLUMNS, pl.Float64)
        else:
            schema[m] = pl.Float64
    if "groundedness" in metrics:
        schema["unsupported"] = pl.List(pl.String)
    if judged:
        schema["judge"] = pl.Float64
    schema["error"] = pl.String
    return schema


def llm_eval(
    data: Any,
    model: Callable[[str], Any] | None = None,
    metrics: Sequence[str] | None = None,
    judge: Callable[[str], Any] | None = None,
    *,
    embedder: Callable[[list[str]], Any] | None = None,
    prompt_template: str | None = None,
    judge_template: str | None = None,
    judge_timeout: float = 60.0,
    judge_workers: int = 4,
    max_tokens: int = 4096,
    grounded_threshold: float = G.DEFAULT_THRESHOLD,
    batch_size: int = 512,
    log: bool = True,
    prefix: str = "llm",
    n_boot: int = 1000,
) -> EvalResult:
    """Score LLM answers offline; inside a run, log the scores, params and table.

    `data`: polars/pandas frame or list of dicts with question (or prompt), answer (or
    response), optional reference and context (a string or a list of passages).
    `model(prompt)`: generate the answers first (latency and tokens recorded);
    `prompt_template` ("...{question}...{context}...") builds that prompt. `metrics`: a
    subset of relevance, similarity, groundedness, coherence, exact_match, token_f1, rouge1,
    rouge2, rougeL, bleu, text_stats (default: all the data allows). `judge(prompt)`: an
    LLM-as-judge returning a number, filled from `judge_template`. `embedder(texts)`: your
    own embedding function (default: the packaged all-MiniLM-L6-v2, offline).

    Bad rows never stop the evaluation: each gets its reason in the `error` column and null
    scores. Aggregates are means with 95 % bootstrap intervals, logged as `llm/<metric>`
    and `llm/<metric>/ci_low|ci_high`; the table is logged as the `llm_eval.parquet`
    artifact."""
    _check_args(model, judge, max_tokens, batch_size, judge_timeout, judge_workers,
                grounded_threshold, prefix)  # fmt: skip
    cols = I.resolve_columns(data, need_answer=model is None)
    chosen = _select(metrics, cols)
    if prompt_template is not None:
        _check_prompt(prompt_template)
    jt = check_template(judge_template or DEFAULT_TEMPLATE) if judge is not None else None
    emb = None
    if any(m in EMBEDDING_METRICS for m in chosen):
        from .embed import as_embedder

        emb = as_embedder(embedder)
    schema = _columns_for(chosen, cols, model is not None, judge is not None)
    opts = dict(metrics=chosen, model=model, judge=judge, emb=emb, max_tokens=max_tokens,
                threshold=grounded_threshold, prompt_template=prompt_template,
                judge_template=jt, judge_timeout=judge_timeout, judge_workers=judge_workers)  # fmt: skip

    out_dir = Path(tempfile.mkdtemp(prefix="mlops-llm-eval-"))
    path = out_dir / "llm_eval.parquet"
    sink = _ParquetSink(path, schema)
    values: dict[str, list[np.ndarray]] = {}
    bleu_tot = [0] * (2 + 2 * R.MAX_ORDER)
    n = n_err = 0
    try:
        for chunk in I.chunks(data, cols, batch_size):
            frame, bleu = _score_chunk(chunk, n, schema, opts)
            sink.write(frame)
            for i, v in enumerate(bleu):
                bleu_tot[i] += v
            for c, dt in schema.items():
                if dt in (pl.Float64, pl.Int64) and c != "row":
                    values.setdefault(c, []).append(
                        frame[c].cast(pl.Float64).fill_null(math.nan).to_numpy()
                    )
            n += frame.height
            n_err += frame["error"].is_not_null().sum()
    finally:
        sink.close()
    summary = _summary(values, n, n_err, bleu_tot if "bleu" in chosen else None, n_boot)
    primary = next((m for m in PRIMARY if m in schema), None)
    params = {f"{prefix}/metrics": ",".join(chosen), f"{prefix}/max_tokens": max_tokens}
    if emb is not None:
        params[f"{prefix}/embedder"] = emb.name
    if "groundedness" in chosen:
        params[f"{prefix}/grounded_threshold"] = grounded_threshold
    if prompt_template is not None:
        params[f"{prefix}/prompt_template"] = prompt_template
    if jt is not None:
        params[f"{prefix}/judge_template"] = jt
    res = EvalResult(summary, path, n, int(n_err), primary, None, params)
    if log:
        try:
            _log(res, prefix, out_dir, prompt_template, jt)
        except Exception as e:  # the scores are computed: losing the logging must not lose them
            import warnings

            warnings.warn(
                f"mlops-jupyter: llm_eval could not log to the run: {type(e).__name__}: {e}",
                RuntimeWarning,
                stacklevel=2,
            )
    return res


def _check_args(model, judge, max_tokens, batch_size, judge_timeout, judge_workers, thr, prefix):
    for name, fn in (("model", model), ("judge", judge)):
        if fn is not None and not callable(fn):
            raise InvalidInputError(
                f"{name} must be a callable (prompt -> ...), got {type(fn).__name__}"
            )
    for name, v in (
        ("max_tokens", max_tokens),
        ("batch_size", batch_size),
        ("judge_workers", judge_workers),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {v!r}")
    if (
        isinstance(judge_timeout, bool)
        or not isinstance(judge_timeout, (int, float))
        or not judge_timeout > 0
    ):
        raise InvalidInputError(
            f"judge_timeout must be a positive number of seconds, got {judge_timeout!r}"
        )
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 <= thr <= 1:
        raise InvalidInputError(f"grounded_threshold must be in [0, 1], got {thr!r}")
    if not isinstance(prefix, str) or not prefix or prefix.endswith("/"):
        raise InvalidInputError(
            f"prefix must be a non-empty string without a trailing '/', got {prefix!r}"
        )


def _check_prompt(t: Any) -> None:
    if not isinstance(t, str) or "{question}" not in t:
        raise InvalidInputError("prompt_template must be a string containing {question}")
    try:
        t.format(question="", context="")
    except (KeyError, IndexError, ValueError) as e:
        raise InvalidInputError(
            f"prompt_template may only use {{question}} and {{context}} ({e})"
        ) from None


def _score_chunk(chunk: dict[str, list], offset: int, schema: dict, o: dict):
    """Score one chunk of rows; returns (frame, summed BLEU statistics)."""
    k = len(chunk["question"])
    metrics, max_tokens = o["metrics"], o["max_tokens"]
    out: dict[str, list] = {c: [None] * k for c in schema}
    out["row"] = list(range(offset, offset + k))
    errors: list[list[str]] = [[] for _ in range(k)]
    qs, qerr = zip(*(I.check_text(v, "question", max_tokens, True) for v in chunk["question"]))
    ctx_raw = chunk.get("context", [None] * k)
    ctxs, cerr = (
        zip(*(I.check_context(v, max_tokens) for v in ctx_raw))
        if "context" in chunk
        else ([None] * k, [None] * k)
    )
    refs, rerr = (
        zip(*(I.check_text(v, "reference", max_tokens, False) for v in chunk["reference"]))
        if "reference" in chunk
        else ([None] * k, [None] * k)
    )
    if o["model"] is not None:
        tmpl = o["prompt_template"]
        prompts = [
            (tmpl.format(question=q, context=_ctx_str(c) or "") if tmpl and q else q)
            for q, c in zip(qs, ctxs)
        ]
        gen = I.generate(o["model"], list(prompts))
        for c in ("latency_s", "prompt_tokens", "completion_tokens"):
            out[c] = [g[c] for g in gen]
        raw_answers = [g["answer"] for g in gen]
        gerr = [g["gen_error"] for g in gen]
    else:
        raw_answers, gerr = chunk["answer"], [None] * k
    ans, aerr = zip(*(I.check_text(v, "answer", max_tokens, True) for v in raw_answers))
    for i in range(k):
        for e in (qerr[i], gerr[i] or aerr[i], rerr[i], cerr[i]):
            if e:
                errors[i].append(e)
    out["question"] = [q if isinstance(q, str) else _show(v) for q, v in zip(qs, chunk["question"])]
    out["answer"] = [a if isinstance(a, str) else _show(v) for a, v in zip(ans, raw_answers)]
    if "reference" in schema:
        out["reference"] = [
            r if isinstance(r, str) else _show(v) for r, v in zip(refs, chunk["reference"])
        ]
    if "context" in schema:
        out["context"] = [_ctx_str(c) if c is not None else _show(v) for c, v in zip(ctxs, ctx_raw)]

    if "text_stats" in metrics:
        for i, a in enumerate(ans):
            if a is not None:
                for key, v in text_stats(a).items():
                    out[key][i] = v
    bleu_tot = [0] * (2 + 2 * R.MAX_ORDER)
    if any(m in REFERENCE_METRICS for m in metrics):
        for i, (a, r) in enumerate(zip(ans, refs)):
            if a is None or r is None:
                continue
            if "exact_match" in metrics:
                out["exact_match"][i] = R.exact_match(a, r)
            if "token_f1" in metrics:
                out["token_f1"][i] = R.token_f1(a, r)
            if any(m in metrics for m in ("rouge1", "rouge2", "rougeL")):
                for key, v in R.rouge(a, r).items():
                    if key in metrics:
                        out[key][i] = v
            if "bleu" in metrics:
                st = R.bleu_stats(a, r)
                out["bleu"][i] = R.bleu_from_stats(st, effective_order=True)
                bleu_tot = [x + y for x, y in zip(bleu_tot, st)]
    if o["emb"] is not None:
        try:
            _embedding_scores(o, out, qs, ans, refs, ctxs)
        except InvalidInputError:
            raise
        except MlopsJupyterError as e:
            for i in range(k):
                errors[i].append(str(e))
    if o["judge"] is not None:
        prompts = [
            o["judge_template"].format(
                question=q or "", answer=a, reference=r or "", context=_ctx_str(c) or ""
            )
            if a is not None
            else None
            for q, a, r, c in zip(qs, ans, refs, ctxs)
        ]
        for i, (scores, err) in enumerate(
            run_judge(o["judge"], prompts, o["judge_timeout"], o["judge_workers"])
        ):
            if err:
                errors[i].append(err)
            for key, v in scores.items():
                out[key][i] = v
    out["error"] = ["; ".join(e) if e else None for e in errors]
    return pl.DataFrame(out, schema=schema), bleu_tot


def _embedding_scores(o, out, qs, ans, refs, ctxs) -> None:
    metrics, emb = o["metrics"], o["emb"]
    need_sents = "groundedness" in metrics or "coherence" in metrics
    texts: list[str] = []
    a_sents: list[list[str]] = []
    c_sents: list[list[str]] = []
    for q, a, r, c in zip(qs, ans, refs, ctxs):
        sa = split_sentences(a)[: G.MAX_SENTENCES] if (a is not None and need_sents) else []
        sc = (
            G.context_sentences(c)
            if (a is not None and c is not None and "groundedness" in metrics)
            else []
        )
        a_sents.append(sa)
        c_sents.append(sc)
        if a is None:
            continue
        texts.append(a)
        if q is not None and "relevance" in metrics:
            texts.append(q)
        if r is not None and "similarity" in metrics:
            texts.append(r)
        texts.extend(sa)
        texts.extend(sc)
    if not texts:
        return
    uniq = list(dict.fromkeys(texts))
    vecs = emb(uniq)
    at = {t: i for i, t in enumerate(uniq)}
    for i, (q, a, r, c) in enumerate(zip(qs, ans, refs, ctxs)):
        if a is None:
            continue
        va = vecs[at[a]]
        if "relevance" in metrics and q is not None:
            out["relevance"][i] = float(np.clip(va @ vecs[at[q]], -1, 1))
        if "similarity" in metrics and r is not None:
            out["similarity"][i] = float(np.clip(va @ vecs[at[r]], -1, 1))
        sv = vecs[[at[s] for s in a_sents[i]]] if a_sents[i] else np.zeros((0, vecs.shape[1]))
        if "coherence" in metrics:
            v = G.coherence(sv)
            out["coherence"][i] = None if math.isnan(v) else v
        if "groundedness" in metrics and c is not None:
            cv = vecs[[at[s] for s in c_sents[i]]] if c_sents[i] else np.zeros((0, vecs.shape[1]))
            g = G.grounding(a_sents[i], sv, c_sents[i], cv, o["threshold"])
            out["groundedness"][i] = None if math.isnan(g.score) else g.score
            out["unsupported"][i] = g.unsupported


def _ctx_str(c: Any) -> str | None:
    if c is None:
        return None
    return c if isinstance(c, str) else "\n\n".join(c)


def _show(v: Any) -> str | None:
    """What a bad input looked like, for the table (never the whole of a huge value)."""
    if v is None or isinstance(v, str) and len(v) <= 2000:
        return v
    s = v if isinstance(v, str) else repr(v)
    return s[:2000] + ("..." if len(s) > 2000 else "")


def _summary(values, n, n_err, bleu_tot, n_boot) -> pl.DataFrame:
    rows = []
    for c, parts in values.items():
        mean, lo, hi, cnt = bootstrap_ci(np.concatenate(parts), n_boot=n_boot)
        rows.append((c, mean, lo, hi, cnt))
    if bleu_tot is not None:
        b = R.bleu_from_stats(bleu_tot, effective_order=False)
        rows.append(("bleu_corpus", b, math.nan, math.nan, n))
    rate = n_err / n if n else math.nan
    rows.append(("error_rate", rate, math.nan, math.nan, n))
    return pl.DataFrame(
        rows,
        schema={
            "metric": pl.String,
            "mean": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "n": pl.Int64,
        },
        orient="row",
    )


def _log(res: EvalResult, prefix: str, out_dir: Path, prompt_template, judge_template) -> None:
    from ..tracking import active_run

    run = active_run()
    if run is None:
        return
    pts = {}
    for metric, mean, lo, hi, _ in res.summary.iter_rows():
        if mean == mean:
            pts[f"{prefix}/{metric}"] = mean
        if lo == lo and hi == hi:
            pts[f"{prefix}/{metric}/ci_low"] = lo
            pts[f"{prefix}/{metric}/ci_high"] = hi
    pts[f"{prefix}/n_examples"] = res.n_examples
    for key, v in pts.items():
        run.log_metric(key, v)
    run.log_params(res.params)
    name = f"{prefix}_eval.parquet"
    run.log_artifact(res.path, name=name)
    for fname, text in (
        ("prompt_template.txt", prompt_template),
        ("judge_template.txt", judge_template),
    ):
        if text is not None:
            p = out_dir / fname
            p.write_text(text, encoding="utf-8")
            run.log_artifact(p, name=f"{prefix}_{fname}")
            os.unlink(p)
    stored = run.artifact_path(name)
    os.unlink(res.path)
    res.path = stored
    res.run_id = run.id


class _ParquetSink:
    """Appends chunks to one parquet file (pyarrow streams them; without pyarrow the chunks
    are kept and written at the end by polars)."""

    def __init__(self, path: Path, schema: dict) -> None:
        self.path = path
        self.empty = pl.DataFrame(schema=schema)
        self.frames: list[pl.DataFrame] = []
        try:
            import pyarrow.parquet as pq
        except ImportError:
            self.writer = None
        else:
            self.arrow_schema = self.empty.to_arrow().schema
            self.writer = pq.ParquetWriter(str(path), self.arrow_schema, compression="zstd")

    def write(self, frame: pl.DataFrame) -> None:
        if self.writer is None:
            self.frames.append(frame)
        else:
            self.writer.write_table(frame.to_arrow().cast(self.arrow_schema))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        else:
            pl.concat([self.empty, *self.frames]).write_parquet(self.path)
