"""Small hand-written evaluation sets shared by the LLM evaluation tests."""

from __future__ import annotations

import zlib

import numpy as np

# (context, [(answer sentence, planted_unsupported)]): supported sentences paraphrase or
# restate the context; planted ones state facts the context does not contain.
GROUNDED_SET = [
    (
        "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by Gustave "
        "Eiffel's company and completed in 1889 for the World's Fair. It is 330 metres tall.",
        [
            ("The Eiffel Tower stands in Paris and is made of wrought iron.", False),
            ("It was completed in 1889 for the World's Fair.", False),
            ("The tower was painted gold by Napoleon in 1920.", True),
            # subtle: a changed number in an otherwise supported sentence
            ("It is 500 metres tall.", True),
        ],
    ),
    (
        "Photosynthesis converts light energy into chemical energy. Plants take in carbon "
        "dioxide and water and release oxygen. Chlorophyll in the chloroplasts absorbs light.",
        [
            ("Plants use photosynthesis to turn light energy into chemical energy.", False),
            ("Chlorophyll absorbs the light inside chloroplasts.", False),
            ("Photosynthesis mostly happens at night in deep caves.", True),
        ],
    ),
    (
        "Python is a high-level programming language created by Guido van Rossum. It was first "
        "released in 1991. Python emphasises code readability with significant indentation.",
        [
            ("Python was created by Guido van Rossum.", False),
            ("Its first release was in 1991.", False),
            ("Python compiles directly to GPU microcode for every program.", True),
            ("The language was named after a species of snake found in Brazil.", True),
        ],
    ),
    (
        "Mount Everest is Earth's highest mountain above sea level, in the Himalayas. Its "
        "elevation is 8,849 metres. Tenzing Norgay and Edmund Hillary first reached the summit "
        "in 1953.",
        [
            ("Everest, in the Himalayas, is the highest mountain above sea level.", False),
            ("Hillary and Tenzing Norgay first reached the summit in 1953.", False),
            ("A railway line now carries tourists to the summit every morning.", True),
        ],
    ),
    (
        "The human heart has four chambers: two atria and two ventricles. It pumps blood through "
        "the circulatory system. An adult heart beats about 60 to 100 times a minute at rest.",
        [
            ("The heart has four chambers, two atria and two ventricles.", False),
            ("At rest an adult heart beats roughly 60 to 100 times per minute.", False),
            ("Heart cells are replaced completely every week by the liver.", True),
            ("The heart has six chambers.", True),
        ],
    ),
    (
        "SQLite is a C library that implements a small, fast, self-contained SQL database "
        "engine. It is the most widely deployed database engine. The database is a single "
        "ordinary disk file.",
        [
            ("SQLite is a self-contained SQL database engine written as a C library.", False),
            ("A SQLite database is stored in one ordinary file on disk.", False),
            ("SQLite requires a dedicated server cluster with at least three nodes.", True),
        ],
    ),
]


def hash_embedder(texts: list[str]) -> np.ndarray:
    """A cheap deterministic bag-of-words embedding (for tests about plumbing, not quality)."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % 64] += 1.0
        out[i, 63] += 0.01
    return out
