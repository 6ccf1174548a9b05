"""Reference metrics against rouge-score and sacrebleu, and the pure-Python pieces of the
LLM evaluation (no embedding model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_jupyter.llm import reference as R
from mlops_jupyter.llm.judge import parse_score
from mlops_jupyter.llm.result import bootstrap_ci
from mlops_jupyter.llm.textstats import is_refusal, split_sentences, text_stats

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
sacrebleu = pytest.importorskip("sacrebleu")
SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])

# words that exercise the tokenizers: punctuation, numbers, hyphens, entities, non-ASCII
WORDS = ["the", "cat", "sat", "on", "mat", "3.5", "e.g.,", "x-ray", "Dog's", "&amp;", "naïve",
         "1,000", "end.", "(a)", "?", "ok-", "-", "über", "²", "Cat", "mat.", "<b>", "5-4"]  # fmt: skip
sentences = st.lists(st.sampled_from(WORDS), max_size=14).map(" ".join)
free_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)

CASES = [
    ("The cat sat on the mat.", "The cat is on the mat."),
    ("Paris is the capital of France.", "Paris"),
    ("", "something"),
    ("something", ""),
    ("a b c d e f", "a b c d e f"),
    ("It costs $3.50, i.e. 350 cents.", "The price is 3.50 dollars (350 cents)."),
    ("Hello-world &amp; friends", "hello world & friends"),
]


def _check_rouge(pred: str, ref: str) -> None:
    mine = R.rouge(pred, ref)
    theirs = SCORER.score(ref, pred)  # rouge-score takes (target, prediction)
    for k in ("rouge1", "rouge2", "rougeL"):
        assert abs(mine[k] - theirs[k].fmeasure) <= 1e-9, (k, pred, ref)


def _check_bleu(pred: str, ref: str) -> None:
    mine = R.sentence_bleu(pred, ref)
    theirs = sacrebleu.sentence_bleu(pred, [ref]).score / 100
    assert abs(mine - theirs) <= 1e-9, (pred, ref, mine, theirs)


@pytest.mark.parametrize("pred,ref", CASES)
def test_reference_metrics_equal_rouge_score_and_sacrebleu(pred, ref):
    _check_rouge(pred, ref)
    _check_bleu(pred, ref)


@settings(max_examples=300, deadline=None)
@given(sentences, sentences)
def test_rouge_and_bleu_match_the_libraries_on_random_sentences(pred, ref):
    _check_rouge(pred, ref)
    _check_bleu(pred, ref)


@settings(max_examples=200, deadline=None)
@given(free_text, free_text)
def test_rouge_and_bleu_match_the_libraries_on_any_text(pred, ref):
    _check_rouge(pred, ref)
    _check_bleu(pred, ref)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(sentences, sentences), min_size=1, max_size=20))
def test_corpus_bleu_matches_sacrebleu(pairs):
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    theirs = sacrebleu.corpus_bleu(preds, [refs]).score / 100
    assert abs(R.corpus_bleu(preds, refs) - theirs) <= 1e-9


def test_exact_match_and_token_f1_follow_squad_normalisation():
    assert R.exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert R.exact_match("Eiffel", "eiffel tower") == 0.0
    # pred tokens {paris, is, capital, of, france}; ref {paris}: p = 1/5, r = 1
    assert R.token_f1("Paris is the capital of France", "Paris") == pytest.approx(2 * 0.2 / 1.2)
    assert R.token_f1("", "") == 1.0 and R.token_f1("cat", "") == 0.0
    assert R.token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)


def test_text_stats_and_refusals():
    s = text_stats("The cat sat. It was happy!\nThe end")
    assert (s["n_words"], s["n_sentences"], s["refusal"]) == (8.0, 3.0, 0.0)
    assert 80 < s["flesch"] < 130  # short words, short sentences: very easy
    assert math.isnan(text_stats("...")["flesch"])
    assert is_refusal("I’m sorry, but I can’t help with that.")
    assert not is_refusal("Sorry for the delay: the answer is 4.")
    assert split_sentences("A. B?  C!\n\nD") == ["A.", "B?", "C!", "D"]


def test_judge_replies_are_read_or_rejected_clearly():
    assert parse_score(4) == {"judge": 4.0}
    assert parse_score("Score: 3.5 out of 5") == {"judge": 3.5}
    assert parse_score(np.float32(2)) == {"judge": 2.0}
    for bad, msg in ((True, "bool"), ("great answer", "no number"), (None, "NoneType"),
                     (float("nan"), "non-finite"), ({"a": 1}, "dict")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            parse_score(bad)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(0.5, 0.1, 100)
    big = rng.normal(0.5, 0.1, 10_000)
    m1, lo1, hi1, n1 = bootstrap_ci(small)
    m2, lo2, hi2, n2 = bootstrap_ci(big)
    assert lo1 < m1 < hi1 and lo2 < m2 < hi2 and (n1, n2) == (100, 10_000)
    assert (hi2 - lo2) < (hi1 - lo1) / 5
    # close to the normal interval 1.96 * sd / sqrt(n)
    assert (hi2 - lo2) / 2 == pytest.approx(1.96 * big.std() / 100, rel=0.1)
    assert bootstrap_ci(np.array([np.nan, 1.0, np.nan]))[1:] == (1.0, 1.0, 1)
    assert math.isnan(bootstrap_ci(np.array([np.nan]))[0])
    # deterministic: a stored interval can be recomputed
    assert bootstrap_ci(small) == bootstrap_ci(small)


_values = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.integers(),
    st.just(float("nan")),
    st.lists(st.text(max_size=10), max_size=3),
    st.just("word " * 50),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.fixed_dictionaries({"question": _values, "answer": _values,
                                       "reference": _values, "context": _values}),
                min_size=1, max_size=12))  # fmt: skip
def test_any_input_gives_one_row_per_example_with_scores_or_a_reason(rows):
    from llm_eval_data import hash_embedder

    import mlops_jupyter as mj

    res = mj.llm_eval(rows, embedder=hash_embedder, max_tokens=40, batch_size=5, log=False)
    t = res.table
    assert t.height == len(rows) and t["row"].to_list() == list(range(len(rows)))
    for r, out in zip(rows, t.iter_rows(named=True)):
        ok = isinstance(r["answer"], str) and r["answer"].strip() and len(r["answer"].split()) <= 40
        if ok:
            assert out["n_words"] is not None
        else:
            assert out["error"] and "answer" in out["error"] and out["n_words"] is None
    assert res.n_errors == t["error"].is_not_null().sum()
