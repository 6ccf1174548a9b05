"""Bad input raises a clear MlopsJupyterError at the call site and writes nothing."""

from __future__ import annotations

import pytest

import mlops_jupyter as mj
from mlops_jupyter.errors import (
    ArtifactNotFoundError,
    InvalidInputError,
    MlopsJupyterError,
    NoActiveRunError,
    RunNotFoundError,
)


def test_no_active_run_says_how_to_start_one():
    for call in (
        lambda: mj.log_metric("x", 1),
        lambda: mj.log(x=1),
        lambda: mj.log_params({"a": 1}),
        lambda: mj.set_tags({"a": 1}),
        lambda: mj.log_artifact("x"),
        mj.end_run,
    ):
        with pytest.raises(NoActiveRunError, match="start_run"):
            call()
    assert issubclass(NoActiveRunError, MlopsJupyterError)


@pytest.mark.parametrize("key", ["", None, 3, b"loss", ("a",)])
def test_bad_keys(key):
    with mj.start_run() as run:
        with pytest.raises(InvalidInputError, match="key"):
            mj.log_metric(key, 1.0)
        with pytest.raises(InvalidInputError, match="key"):
            run.log_metric(key, 1.0)


@pytest.mark.parametrize("value", ["1.0", None, [1, 2], {"a": 1}, object(), b"1"])
def test_non_numeric_values(value):
    with mj.start_run() as run:
        with pytest.raises(InvalidInputError, match="number"):
            mj.log_metric("x", value)
        with pytest.raises(InvalidInputError, match="number"):
            mj.log(x=value)
    assert mj.metrics(run.id).height == 0


@pytest.mark.parametrize("step", [-1, 1.5, 2.0, "3", True, None.__class__])
def test_bad_steps(step):
    with mj.start_run() as run:
        with pytest.raises(InvalidInputError, match="step"):
            mj.log_metric("x", 1.0, step=step)
        with pytest.raises(InvalidInputError, match="step"):
            mj.log(step=step, x=1.0)
    assert mj.metrics(run.id).height == 0


def test_errors_are_also_builtin_types():
    with mj.start_run():
        with pytest.raises(ValueError):
            mj.log_metric("", 1)
        with pytest.raises(TypeError):
            mj.log_metric("x", "nope")


def test_unknown_runs():
    with mj.start_run("real"):
        pass
    with pytest.raises(RunNotFoundError, match="nope"):
        mj.get_run("nope")
    with pytest.raises(RunNotFoundError):
        mj.metrics("ffffffffffff")
    with pytest.raises(InvalidInputError):
        mj.get_run(3.5)


def test_missing_artifact(tmp_path):
    with mj.start_run():
        with pytest.raises(ArtifactNotFoundError, match="does not exist"):
            mj.log_artifact(tmp_path / "missing.bin")
        with pytest.raises(InvalidInputError):
            mj.log_artifact(123)


def test_bad_run_arguments():
    with pytest.raises(InvalidInputError):
        mj.start_run(name=5)
    with pytest.raises(InvalidInputError):
        mj.start_run(experiment="")
    with pytest.raises(InvalidInputError):
        mj.start_run(params=[("lr", 1)])
    with pytest.raises(InvalidInputError):
        mj.start_run(params={1: 2})
    assert mj.active_run() is None
    with mj.start_run() as run:
        with pytest.raises(InvalidInputError):
            mj.log_params("lr=1")
        with pytest.raises(InvalidInputError):
            run.end("done")
    assert mj.runs().height == 1


def test_logging_to_an_ended_run():
    with mj.start_run() as run:
        pass
    with pytest.raises(MlopsJupyterError, match="ended"):
        run.log_metric("x", 1.0)
    run.end()  # ending twice is harmless


def test_store_errors_are_exported_and_share_one_base():
    for name in ("StoreError", "NotAStoreError", "ReadOnlyStoreError", "MalformedStoreError"):
        cls = getattr(mj, name)
        assert name in mj.__all__ and issubclass(cls, mj.StoreError)
        assert issubclass(cls, mj.MlopsJupyterError)
