"""LLM evaluation: offline scores per example and per run, stored with the run.

    res = mj.llm_eval(df)                  # question/answer[/reference/context] columns
    mj.llm_regressions(run, baseline)      # scores that dropped beyond the baseline's CI
    mj.llm.compare_examples("prompt-v1", "prompt-v2")   # per example, biggest drops first
    mj.llm.text_drift(last_week, this_week)

Pure Python (no IPython); the embedding model and its libraries load on first use.
"""

from __future__ import annotations

from .compare import compare_examples, compare_scores, eval_table
from .embed import Embedder
from .profile import text_drift, text_profiles
from .reference import corpus_bleu, exact_match, rouge, sentence_bleu, token_f1
from .regress import llm_regressions
from .result import EvalResult
from .runner import METRICS, llm_eval

__all__ = [
    "METRICS",
    "Embedder",
    "compare_examples",
    "compare_scores",
    "eval_table",
    "EvalResult",
    "corpus_bleu",
    "exact_match",
    "llm_eval",
    "llm_regressions",
    "rouge",
    "sentence_bleu",
    "text_drift",
    "text_profiles",
    "token_f1",
]
