"""%mlops_llm_eval through a real IPython kernel, inside %%mlops_run."""

from __future__ import annotations

import pytest
from data_helpers import text_of
from notebook_helpers import run_notebook

import mlops_jupyter as mj

pytest.importorskip("nbclient")

SETUP = """
%load_ext mlops_jupyter
import zlib
import numpy as np
import mlops_jupyter as mj

def embed(texts):  # a cheap deterministic embedding keeps the kernel light
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % 64] += 1.0
        out[i, 63] += 0.01
    return out

rows = [
    {"question": "capital of France?", "reference": "Paris is the capital of France"},
    {"question": "author of Hamlet?", "reference": "Shakespeare wrote Hamlet"},
    {"question": "", "reference": "nothing"},
]
answers = {"capital of France?": "Paris is the capital of France.",
           "author of Hamlet?": "Hamlet was written by Shakespeare."}
def model(prompt):
    return answers[prompt.split(": ", 1)[1]]
template = "Answer: {question}"
"""


@pytest.mark.timeout(180)
def test_magic_evaluates_inside_a_run_and_logs_everything(tmp_path, store_path):
    cells = [
        SETUP,
        "%%mlops_run prompt-v1 --no-live\n"
        "res = %mlops_llm_eval rows --model model --prompt-template template --embedder embed\n"
        "res",
        "print(res.n_examples, res.n_errors, res.run_id == mj.runs()['id'][0])",
        "%mlops_llm_eval nope",
        "%mlops_llm_eval rows --model model --metrics bleu,nonsense --no-log",
    ]
    nb = run_notebook(cells, tmp_path, allow_errors=True)
    code = nb.cells
    out1 = text_of(code[1])
    assert "Error" not in out1, out1
    assert "LLM evaluation" in out1 and "Worst examples" in out1
    assert text_of(code[2]).strip() == "3 1 True"
    assert "no variable 'nope'" in text_of(code[3])
    assert "unknown metric 'nonsense'" in text_of(code[4])

    mj.set_store(store_path)
    d = mj.get_run("prompt-v1")
    assert d["status"] == "finished"
    keys = {m["key"] for m in d["metrics"]}
    assert {"llm/relevance", "llm/token_f1", "llm/bleu", "llm/error_rate"} <= keys
    assert d["params"]["llm/prompt_template"] == "Answer: {question}"
    assert {a["name"] for a in d["artifacts"]} >= {"llm_eval.parquet", "llm_prompt_template.txt"}
