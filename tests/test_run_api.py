"""The public Run API for integrations: on-end callbacks, log listeners, flush, events,
store id and the run resolver; and no package outside tracking/ reaching into a Run."""

from __future__ import annotations

import ast
import json
import threading
import warnings
from pathlib import Path

import pytest

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError, NoActiveRunError, RunNotFoundError
from mlops_jupyter.tracking import resolve_run

PKG = Path(mj.__file__).parent


def _points(run) -> list[tuple[str, int | None, float]]:
    df = mj.metrics(run.id).sort("ts")
    return list(zip(df["key"].to_list(), df["step"].to_list(), df["value"].to_list()))


def test_on_end_callback_fires_once_with_the_status_and_can_unsubscribe():
    seen, dropped = [], []
    run = mj.start_run("cb")
    run.on_end(lambda r, status: seen.append((r, status)))
    off = run.on_end(lambda r, status: dropped.append(status))
    off()
    off()  # unsubscribing twice is harmless
    run.end("failed")
    run.end("finished")  # a second end is a no-op: no second call
    assert seen == [(run, "failed")] and dropped == []


def test_on_end_callback_that_raises_warns_and_the_run_still_ends():
    run = mj.start_run("cb-raise")
    run.on_end(lambda r, s: 1 / 0)
    with pytest.warns(RuntimeWarning, match="end-of-run hook failed"):
        run.end()
    assert run.status == "finished" and mj.active_run() is None


def test_listeners_see_every_point_in_the_logging_thread_and_can_unsubscribe():
    got, threads = [], set()

    def listen(key, value, step):
        got.append((key, step, value))
        threads.add(threading.get_ident())

    with mj.start_run("listen") as run:
        run.add_log_listener(listen)
        run.log_metric("a", 1.0, 0)
        run.log(step=1, a=2.0, b=3.0)
        mj.log_metric("a", 4.0)
        mj.log(step=2, b=5.0)
        run.remove_log_listener(listen)
        run.log_metric("a", 6.0, 3)
        run.remove_log_listener(listen)  # not registered any more: ignored
    assert got == [("a", 0, 1.0), ("a", 1, 2.0), ("b", 1, 3.0), ("a", None, 4.0), ("b", 2, 5.0)]
    assert threads == {threading.get_ident()}
    assert len(_points(run)) == 6  # the listener changed nothing about what is stored


def test_a_listener_that_raises_warns_once_and_never_breaks_logging():
    calls = []

    def bad(key, value, step):
        calls.append(key)
        raise ValueError("listener bug")

    with mj.start_run("bad-listener") as run:
        run.add_log_listener(bad)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for i in range(5):
                run.log_metric("loss", float(i), i)
            run.log(step=5, loss=5.0, acc=1.0)
        msgs = [str(x.message) for x in w if "log listener" in str(x.message)]
        assert len(msgs) == 1 and "listener bug" in msgs[0]
    assert len(calls) == 7
    assert [p[2] for p in _points(run) if p[0] == "loss"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_propagating_listener_raises_after_every_point_of_the_call_is_buffered():
    class Stop(Exception):
        pass

    seen = []

    def stop(key, value, step):
        seen.append(key)
        if key == "a":
            raise Stop

    with mj.start_run("prop") as run:
        run.add_log_listener(stop, propagate=True)
        with pytest.raises(Stop):
            run.log(step=0, a=1.0, b=2.0, c=3.0)
        assert seen == ["a", "b", "c"]
        with pytest.raises(Stop):
            run.log_metric("a", 4.0, 1)
    assert sorted(k for k, _s, _v in _points(run)) == ["a", "a", "b", "c"]


def test_add_log_listener_refuses_a_non_callable():
    with mj.start_run("nc") as run:
        with pytest.raises(InvalidInputError, match="fn"):
            run.add_log_listener("not a function")


def test_flush_makes_buffered_points_readable_at_once():
    with mj.start_run("flush") as run:
        for i in range(10):
            run.log_metric("x", float(i), i)
        run.flush()
        rows = run.store.read(
            "SELECT COUNT(*) FROM runs WHERE id=? AND status='running'", (run.store_id,)
        )
        assert rows[0][0] == 1
        assert [v for _k, _s, v in _points(run)] == [float(i) for i in range(10)]


def test_add_event_records_on_the_run():
    with mj.start_run("ev") as run:
        eid = run.add_event("note", "hello", "warning", {"n": 1})
    run.add_event("after", "also after the end")
    rows = run.store.read(
        "SELECT id, kind, level, message, data FROM run_events WHERE run_id=? ORDER BY id",
        (run.store_id,),
    )
    assert rows[0][:4] == (eid, "note", "warning", "hello")
    assert json.loads(rows[0][4]) == {"n": 1}
    assert rows[1][1:4] == ("after", "info", "also after the end")


def test_resolve_run_takes_a_run_an_id_a_prefix_a_name_or_the_active_run():
    with mj.start_run("resolve-me") as run:
        assert resolve_run() == run.store_id
        assert resolve_run(run) == run.store_id
    assert resolve_run(run.id) == run.store_id
    assert resolve_run(run.id[:6]) == run.store_id
    assert resolve_run("resolve-me") == run.store_id
    with pytest.raises(RunNotFoundError):
        resolve_run("no-such-run")
    with pytest.raises(NoActiveRunError):
        resolve_run()
    with pytest.raises(InvalidInputError):
        resolve_run(3.5)  # type: ignore[arg-type]


# -- no private Run attributes outside tracking/ ----------------------------------------
def _run_private_names() -> set[str]:
    """Private attributes and methods of Run, read from its source."""
    tree = ast.parse((PKG / "tracking" / "run.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Run")
    names = {"_mj_env"}  # the attribute capture used to set on runs
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
            if not node.name.startswith("__"):
                names.add(node.name)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "self" and node.attr.startswith("_"):
                names.add(node.attr)
    return names


def _owned_elsewhere(names: set[str]) -> set[str]:
    """Names that some other class in the package also uses on `self` (data versions have a
    `_rid` of their own); for those only a receiver that names a run counts."""
    out = set()
    for f in PKG.rglob("*.py"):
        if f.parent.name == "tracking":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "self" and node.attr in names:
                    out.add(node.attr)
    return out


def private_run_accesses(source: str, names: set[str], shared: set[str]) -> list[str]:
    """`x._name` / getattr(x, "_name") on something that is not `self`/`cls`, where _name is
    a private Run attribute (and, for a name other classes use too, x mentions a run)."""
    hits = []

    def check(recv: ast.expr, attr: str, line: int) -> None:
        if attr not in names:
            return
        if isinstance(recv, ast.Name) and recv.id in ("self", "cls"):
            return
        text = ast.unparse(recv)
        if attr in shared and "run" not in text.lower():
            return
        hits.append(f"{line}: {text}.{attr}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            check(node.value, node.attr, node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            check(node.args[0], node.args[1].value, node.lineno)
    return hits


def test_the_private_access_check_catches_the_old_patterns():
    names = _run_private_names()
    shared = _owned_elsewhere(names)
    assert {"_rid", "_writer", "_on_end", "_append"} <= names
    old = (
        "run._on_end.append(cb)\n"
        "st.run._writer.flush()\n"
        "rids = [r._rid for r in refs]\n"
        "run._append = tap\n"
        "getattr(run, '_mj_env', False)\n"
        "self._rid = 1\n"  # a class's own attribute is not flagged
        "self._run._on_end.append(x)\n"
    )
    hits = private_run_accesses(old, names, shared)
    assert len(hits) == 6 - ("_rid" in shared), hits


def test_no_module_outside_tracking_touches_a_private_run_attribute():
    names = _run_private_names()
    shared = _owned_elsewhere(names)
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        if f.parent.name == "tracking" and f.parent.parent == PKG:
            continue
        bad += [
            f"{f.relative_to(PKG)}:{h}" for h in private_run_accesses(f.read_text(), names, shared)
        ]
    assert not bad, "use the public Run API instead:\n" + "\n".join(bad)


# -- import cycles the integration API removed ---------------------------------------------
def _imports(mod: str) -> set[str]:
    """Modules of the package that `mod` imports anywhere (function-level imports too)."""
    f = PKG.joinpath(*mod.split(".")[1:]).with_suffix(".py")
    pkg = mod.rsplit(".", 1)[0]
    out = set()
    for n in ast.walk(ast.parse(f.read_text())):
        if isinstance(n, ast.ImportFrom) and n.level:
            base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
            m = ".".join(base + ([n.module] if n.module else []))
            out |= {m} | {f"{m}.{a.name}" for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module:
            out |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return out


def _reaches(a: str, b: str, within: set[str]) -> bool:
    seen, todo = set(), [a]
    while todo:
        for m in _imports(todo.pop()) & within:
            if m == b:
                return True
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return False


@pytest.mark.parametrize(
    "a,b",
    [
        ("data.catalog", "data.compare"),
        ("data.catalog", "data.report"),
        ("data.compare", "data.report"),
        ("data.profile", "data.stats"),
        ("tracking.api", "tracking.run"),
    ],
)
def test_no_import_cycle(a, b):
    sub = a.split(".")[0]
    within = {
        f"mlops_jupyter.{sub}.{f.stem}" for f in (PKG / sub).glob("*.py") if f.stem != "__init__"
    }
    a, b = f"mlops_jupyter.{a}", f"mlops_jupyter.{b}"
    assert not (_reaches(a, b, within) and _reaches(b, a, within)), f"{a} and {b} import each other"
