"""Keras 3 callback on the torch backend: stored epoch series equal `history.history`."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import mlops_jupyter as mj

if os.environ.setdefault("KERAS_BACKEND", "torch") != "torch":
    pytest.skip("these tests run Keras on the torch backend", allow_module_level=True)
pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from mlops_jupyter.integrations.keras import MlopsCallback  # noqa: E402


def _model():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    return m


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    return x, x.sum(1, keepdims=True)


def test_keras_series_equal_history_and_params():
    x, y = _data()
    with mj.start_run("keras") as run:
        m = _model()
        h = m.fit(
            x,
            y,
            validation_split=0.25,
            epochs=3,
            batch_size=16,
            verbose=0,
            callbacks=[MlopsCallback(log_every_n_batches=1)],
        )
    stored = mj.metrics(run.id)
    for k, values in h.history.items():
        s = stored.filter(stored["key"] == k).sort("step")
        assert s["step"].to_list() == list(range(3))
        assert s["value"].to_list() == pytest.approx([float(v) for v in values], rel=1e-6), k
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(h.history)
    assert stored.filter(stored["key"] == "batch/loss").height == 9  # 48 rows / 16, 3 epochs
    p = mj.get_run(run.id)["params"]
    assert p["fit.epochs"] == 3
    assert p["optimizer.learning_rate"] == pytest.approx(0.01)


def test_keras_failure_warns_once_and_fit_finishes():
    x, y = _data()
    ended = mj.start_run("ended")
    ended.end()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h = _model().fit(x, y, epochs=2, verbose=0, callbacks=[MlopsCallback(run=ended)])
    assert len(h.history["loss"]) == 2
    assert len([x for x in w if "Keras integration failed" in str(x.message)]) == 1
