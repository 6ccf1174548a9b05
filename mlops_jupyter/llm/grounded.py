"""Groundedness (is each answer sentence supported by the context?) and coherence.

A sentence's support is the mean of two signals against the context: the best cosine
similarity to a context sentence, and the share of its content words found in the context.
A sentence is supported when that mean reaches the threshold; groundedness is the share of
supported sentences, and the unsupported ones are listed so they can be read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .textstats import split_sentences

DEFAULT_THRESHOLD = 0.55
MAX_SENTENCES = 64  # answer sentences scored per example; the rest count as unchecked
_TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being "
    "it its this that these those there here he she they them his her their we our you your i "
    "me my not no so than then too very can could would should will shall may might must do "
    "does did has have had into over under about after before which who whom whose what when "
    "where why how also just only all any some such each both more most other own same".split()
)


def content_tokens(text: str) -> set[str]:
    """Lower-case word tokens without stopwords."""
    return {t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS}


def context_sentences(context: str | Sequence[str]) -> list[str]:
    """A context (one string, or a list of passages) as a list of sentences."""
    passages = [context] if isinstance(context, str) else list(context)
    return [s for p in passages for s in split_sentences(p)]


@dataclass
class Grounding:
    """Per-sentence support of one answer."""

    sentences: list[str]
    support: list[float]
    threshold: float

    @property
    def score(self) -> float:
        ok = sum(s >= self.threshold for s in self.support)
        return ok / len(self.support) if self.support else float("nan")

    @property
    def unsupported(self) -> list[str]:
        return [t for t, s in zip(self.sentences, self.support) if s < self.threshold]


def grounding(
    answer_sents: list[str],
    answer_vecs: np.ndarray,
    ctx_sents: list[str],
    ctx_vecs: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
) -> Grounding:
    """Support of each answer sentence (vectors are unit rows, one per sentence)."""
    if not answer_sents:
        return Grounding([], [], threshold)
    if not ctx_sents:
        return Grounding(answer_sents, [0.0] * len(answer_sents), threshold)
    best_cos = np.clip((answer_vecs @ ctx_vecs.T).max(axis=1), 0.0, 1.0)
    ctx_tokens: set[str] = set()
    for s in ctx_sents:
        ctx_tokens |= content_tokens(s)
    support = []
    for sent, cos in zip(answer_sents, best_cos):
        toks = content_tokens(sent)
        overlap = len(toks & ctx_tokens) / len(toks) if toks else 1.0
        support.append(0.5 * float(cos) + 0.5 * overlap)
    return Grounding(answer_sents, support, threshold)


def coherence(answer_vecs: np.ndarray) -> float:
    """Mean cosine similarity of consecutive answer sentences (NaN under two sentences)."""
    if len(answer_vecs) < 2:
        return float("nan")
    return float(np.clip(np.einsum("ij,ij->i", answer_vecs[:-1], answer_vecs[1:]), -1, 1).mean())
