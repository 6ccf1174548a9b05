"""Reference metrics: exact match, token F1, ROUGE-1/2/L and BLEU.

ROUGE follows the `rouge-score` package (lower-case, non-alphanumerics as separators, no
stemming; F-measure reported) and BLEU follows `sacrebleu` (13a tokenizer, "exp" smoothing;
sentence BLEU with effective order per example, corpus BLEU for the run). Both are plain
Python here so the evaluation needs neither package; the tests check equality with them.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

# -- exact match and token F1 (SQuAD normalisation) ------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD's rule)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (SQuAD's F1)."""
    p = normalize_answer(prediction).split()
    r = normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


# -- ROUGE ----------------------------------------------------------------------------------
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer (without stemming)."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def _fmeasure(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(pred_tokens: Sequence[str], ref_tokens: Sequence[str], n: int) -> float:
    """ROUGE-N F-measure on token lists."""
    pc, rc = _ngrams(pred_tokens, n), _ngrams(ref_tokens, n)
    hit = sum((pc & rc).values())
    p = hit / max(sum(pc.values()), 1)
    r = hit / max(sum(rc.values()), 1)
    return _fmeasure(p, r)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (two-row dynamic programme)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    """ROUGE-L F-measure on token lists."""
    if not pred_tokens or not ref_tokens:
        return 0.0
    lcs = lcs_length(pred_tokens, ref_tokens)
    return _fmeasure(lcs / len(pred_tokens), lcs / len(ref_tokens))


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of one prediction against one reference."""
    p, r = rouge_tokens(prediction), rouge_tokens(reference)
    return {"rouge1": rouge_n(p, r, 1), "rouge2": rouge_n(p, r, 2), "rougeL": rouge_l(p, r)}


# -- BLEU -----------------------------------------------------------------------------------
_BLEU_RE = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]
MAX_ORDER = 4


@lru_cache(maxsize=4096)
def bleu_tokens(text: str) -> tuple[str, ...]:
    """sacrebleu's 13a tokenizer (mteval-v13a, as used by WMT)."""
    line = text.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for a, b in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
            line = line.replace(a, b)
    line = f" {line} "
    for rx, repl in _BLEU_RE:
        line = rx.sub(repl, line)
    return tuple(line.split())


def bleu_stats(prediction: str, reference: str) -> list[int]:
    """Sufficient statistics: [hyp_len, ref_len, correct_1..4, total_1..4]."""
    h, r = bleu_tokens(prediction), bleu_tokens(reference)
    correct, total = [0] * MAX_ORDER, [0] * MAX_ORDER
    for n in range(1, MAX_ORDER + 1):
        hc, rc = _ngrams(h, n), _ngrams(r, n)
        total[n - 1] = sum(hc.values())
        correct[n - 1] = sum((hc & rc).values())
    return [len(h), len(r), *correct, *total]


def bleu_from_stats(stats: Sequence[int], effective_order: bool) -> float:
    """BLEU in [0, 1] from (summed) statistics, with sacrebleu's "exp" smoothing."""
    sys_len, ref_len = stats[0], stats[1]
    correct, total = stats[2 : 2 + MAX_ORDER], stats[2 + MAX_ORDER :]
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    if not any(correct):
        return 0.0
    precisions = [0.0] * MAX_ORDER
    smooth, eff = 1.0, MAX_ORDER
    for n in range(1, MAX_ORDER + 1):
        if total[n - 1] == 0:
            break
        if effective_order:
            eff = n
        if correct[n - 1] == 0:
            smooth *= 2
            precisions[n - 1] = 100.0 / (smooth * total[n - 1])
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    # sacrebleu floors log(0) at -9999999999 rather than raising
    logs = [math.log(p) if p != 0.0 else -9999999999 for p in precisions[:eff]]
    return bp * math.exp(sum(logs) / eff) / 100.0


def sentence_bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU in [0, 1] (sacrebleu.sentence_bleu / 100)."""
    return bleu_from_stats(bleu_stats(prediction, reference), effective_order=True)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU in [0, 1] (sacrebleu.corpus_bleu(preds, [refs]) / 100)."""
    tot = [0] * (2 + 2 * MAX_ORDER)
    for p, r in zip(predictions, references):
        for i, v in enumerate(bleu_stats(p, r)):
            tot[i] += v
    return bleu_from_stats(tot, effective_order=False)


def reference_scores(prediction: str, reference: str) -> dict[str, float]:
    """All reference metrics of one example."""
    out = {
        "exact_match": exact_match(prediction, reference),
        "token_f1": token_f1(prediction, reference),
    }
    out.update(rouge(prediction, reference))
    out["bleu"] = sentence_bleu(prediction, reference)
    return out
