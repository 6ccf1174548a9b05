"""Text statistics of an answer: length, sentences, readability, refusal phrases."""

from __future__ import annotations

import re

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\uffff]+(?:['’][A-Za-z]+)?")
_VOWELS = re.compile(r"[aeiouy]+")
REFUSAL_PHRASES = (
    "i'm sorry",
    "i am sorry",
    "i apologize",
    "i cannot",
    "i can't",
    "i can not",
    "i'm unable",
    "i am unable",
    "i won't",
    "as an ai",
    "as a language model",
    "cannot assist",
    "can't help with",
    "not able to help",
)


def split_sentences(text: str) -> list[str]:
    """Sentences at . ! ? followed by whitespace, and at line breaks; empty ones dropped."""
    return [s.strip() for s in _SENT_SPLIT.split(text) if s.strip()]


def words(text: str) -> list[str]:
    """Word tokens (letters and digits, with an apostrophe suffix kept)."""
    return _WORD.findall(text)


def syllables(word: str) -> int:
    """A vowel-group estimate of a word's syllables (at least 1)."""
    w = word.lower()
    n = len(_VOWELS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee")) and n > 1:
        n -= 1
    return max(n, 1)


def is_refusal(text: str) -> bool:
    """True when the text contains a common refusal phrase."""
    t = text.lower().replace("’", "'")
    return any(p in t for p in REFUSAL_PHRASES)


def text_stats(text: str) -> dict[str, float]:
    """n_chars, n_words, n_sentences, flesch (reading ease; higher is easier), refusal (0/1)."""
    ws = words(text)
    n_sent = max(len(split_sentences(text)), 1)
    if ws:
        syl = sum(syllables(w) for w in ws)
        flesch = 206.835 - 1.015 * (len(ws) / n_sent) - 84.6 * (syl / len(ws))
    else:
        flesch = float("nan")
    return {
        "n_chars": float(len(text)),
        "n_words": float(len(ws)),
        "n_sentences": float(len(split_sentences(text))),
        "flesch": flesch,
        "refusal": float(is_refusal(text)),
    }
