"""The README and docs/*.md work as copied: every Python block (magics through a real kernel)
and every `mlops-jupyter` / `python -m` shell block runs, in order, against a scratch store.

Blocks that cannot run here are marked `<!-- doc-test: skip (reason) -->` just before the
fence; hidden `<!-- doc-test: setup ... -->` code stands in for the user's own data and
training code. See tests/doc_examples.py.
"""

from __future__ import annotations

import shutil
import textwrap

import pytest
from doc_examples import ROOT, DocSession, DocTestError, collect, documents
from hypothesis import given, settings
from hypothesis import strategies as st

import mlops_jupyter as mj

DOCS = documents()


def _write(tmp_path, text: str):
    path = tmp_path / "doc.md"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _scratch(tmp_path):
    """A scratch folder laid out like a checkout (the docs refer to notebooks/...)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "notebooks", work / "notebooks")
    return work, work / ".mlops"


def run_document(doc, tmp_path) -> tuple[list[str], str | None]:
    """Run every block of `doc` in one session. Returns the failures (every broken block,
    then runs the examples left failed or crashed) and what was not run for want of an
    optional extra."""
    blocks = collect(doc)
    work, store = _scratch(tmp_path)
    failures, not_run = [], None
    with DocSession(work, store) as session:
        for block in blocks:
            if block.missing():  # an optional extra is not installed: later blocks may need it
                not_run = f"{block.where} and later blocks need {', '.join(block.missing())}"
                break
            try:
                session.run(block)
            except AssertionError as e:  # keep going: report every broken block at once
                failures.append(str(e))
    if (store / "store.db").exists():
        # a run can end badly without an exception reaching the cell (a %%mlops_run body
        # that failed, a kernel that lost a run): no run the examples made may do so
        mj.set_store(store)
        try:
            runs = mj.runs()
        finally:
            mj.set_store(None)
        bad = runs.filter(runs["status"].is_in(["failed", "crashed"]))
        if not bad.is_empty():
            failures.append(f"{doc.name}: runs ended badly:\n{bad.select('name', 'status')}")
    return failures, not_run


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_examples_run_as_copied(doc, tmp_path):
    failures, not_run = run_document(doc, tmp_path)
    assert not failures, "\n\n".join(failures)
    if not_run:
        pytest.skip(f"earlier blocks passed; {not_run} (not installed)")


def test_a_run_left_failed_fails_the_document(tmp_path):
    doc = _write(
        tmp_path,
        """\
        ```python
        import mlops_jupyter as mj
        mj.start_run("left-failed")
        mj.end_run(status="failed")
        ```
        """,
    )
    failures, not_run = run_document(doc, tmp_path)
    assert not_run is None
    assert len(failures) == 1 and "runs ended badly" in failures[0] and "left-failed" in failures[0]


def test_every_doc_has_runnable_examples_and_skips_say_why():
    runnable = {
        p.name: [b for b in collect(p) if b.kind != "ignore" and b.skip is None] for p in DOCS
    }
    assert len(runnable) >= 7
    for name, blocks in runnable.items():
        assert blocks, f"{name}: no runnable example found"
    readme = runnable["README.md"]
    assert {b.kind for b in readme} == {"python", "shell"}
    for p in DOCS:
        for b in collect(p):
            assert b.skip is None or b.skip.strip(), b.where


def test_collect_classifies_blocks_and_applies_directives(tmp_path):
    doc = _write(
        tmp_path,
        """\
        # Title

        ```bash
        make run
        pip install .
        ```

        <!-- doc-test: skip (needs a GPU) -->
        ```python
        import torch; torch.cuda.init()
        ```

        <!-- doc-test: setup
        def train_step():
            return 1.0
        -->

        ```python
        loss = train_step()
        ```

        - in a list:
          ```
          mlops-jupyter runs --last 2
          ```

        ```
        %mlops_runs --last 5
        ```

        ```
        project/
          __main__.py   # python -m project
        ```
        """,
    )
    blocks = collect(doc)
    assert [b.kind for b in blocks] == ["ignore", "python", "python", "shell", "python", "ignore"]
    assert blocks[1].skip == "needs a GPU"
    assert blocks[2].setup == "def train_step():\n    return 1.0\n"
    assert blocks[2].skip is None and blocks[2].line == 18
    assert blocks[3].code == "mlops-jupyter runs --last 2\n"  # list indentation removed


def test_needs_names_optional_modules(tmp_path):
    doc = _write(
        tmp_path,
        """\
        <!-- doc-test: needs torch, no_such_module_here -->
        <!-- doc-test: setup
        x = 1
        -->
        ```python
        import torch
        ```
        """,
    )
    [block] = collect(doc)
    assert block.needs == ("torch", "no_such_module_here") and block.setup == "x = 1\n"
    assert "no_such_module_here" in block.missing()
    assert "polars" not in collect(_write(tmp_path, "```python\nimport polars\n```\n"))[0].missing()


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- doc-test: skip -->\n```python\npass\n```\n", "with a reason"),
        ("<!-- doc-test: skip () -->\n```python\npass\n```\n", "with a reason"),
        ("<!-- doc-test: ignore -->\n```python\npass\n```\n", "unknown doc-test directive"),
        ("<!-- doc-test: setup\n-->\n```python\npass\n```\n", "has no code"),
        ("<!-- doc-test: skip (x) -->\ntext\n```python\npass\n```\n", "just before a fence"),
        ("text\n<!-- doc-test: skip (x) -->\n", "no fence after it"),
        ("<!-- doc-test: setup\nx = 1\n", "never closed"),
        ("<!-- doc-test: needs -->\n```python\npass\n```\n", "needs MODULE"),
        ("```bash\npip install .\nmlops-jupyter runs\n```\n", "would change this machine"),
    ],
)
def test_malformed_directives_and_unsafe_blocks_are_refused(tmp_path, text, message):
    with pytest.raises(DocTestError, match=message):
        collect(_write(tmp_path, text))


@settings(max_examples=50, deadline=None)
@given(
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="()`-<>"
        ),
        min_size=1,
    )
)
def test_any_skip_reason_is_kept(tmp_path_factory, reason):
    tmp = tmp_path_factory.mktemp("doc")
    text = f"<!-- doc-test: skip ({reason}) -->\n```python\nraise SystemExit\n```\n"
    if not reason.strip():
        with pytest.raises(DocTestError):
            collect(_write(tmp, text))
    else:
        [block] = collect(_write(tmp, text))
        assert block.skip == reason.strip()


def test_a_broken_example_fails_the_session(tmp_path):
    """The runner reports a failing Python block, a failing magic, a failing command (also
    behind `|| ...`) and a traceback printed by a thread, naming the document line, and
    keeps the namespace between blocks."""
    doc = _write(
        tmp_path,
        """\
        ```python
        import mlops_jupyter as mj
        x = 41
        ```

        ```python
        assert x == 41
        mj.no_such_function()
        ```

        ```python
        %mlops_runs --no-such-option
        ```

        ```bash
        mlops-jupyter show no-such-run
        ```

        ```bash
        mlops-jupyter show no-such-run || echo "a crash hidden by ||"
        ```

        ```python
        import threading
        t = threading.Thread(target=lambda: 1 / 0)
        t.start(); t.join()
        ```
        """,
    )
    work, store = _scratch(tmp_path)
    blocks = collect(doc)
    with DocSession(work, store) as session:
        session.run(blocks[0])
        with pytest.raises(AssertionError, match=r"doc.md:6: block failed(?s:.*)no_such_function"):
            session.run(blocks[1])
        session.run_python("%load_ext mlops_jupyter", "load")
        with pytest.raises(AssertionError, match="doc.md:11"):
            session.run(blocks[2])
        with pytest.raises(AssertionError, match="doc.md:15: shell block exited with"):
            session.run(blocks[3])
        with pytest.raises(AssertionError, match="doc.md:19: shell block printed an error"):
            session.run(blocks[4])
        with pytest.raises(AssertionError, match="doc.md:23: block printed a traceback"):
            session.run(blocks[5])


def test_load_model_by_missing_stage_says_where_the_versions_are():
    v = mj.register_model("clf", {"w": 1})
    with pytest.raises(mj.MlopsJupyterError) as e:
        mj.load_model("clf", stage="production")
    msg = str(e.value)
    assert "has no a " not in msg
    assert msg.startswith("model 'clf' has no version in stage 'production'")
    assert "none" in msg and "promote_model" in msg
    mj.promote_model("clf", v, "staging")
    assert mj.load_model("clf", stage="staging") == {"w": 1}
