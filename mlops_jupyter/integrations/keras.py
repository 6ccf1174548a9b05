"""Keras 3: a callback (any backend; the tests use `KERAS_BACKEND=torch`).

    model.fit(x, y, validation_data=(xv, yv), epochs=5, callbacks=[MlopsCallback()])

`fit`'s settings and the optimizer's config become params; each epoch's logs (loss,
metrics, val_*) become metrics at step = epoch, so the stored series equal
`history.history`; `log_every_n_batches` also logs batch logs under "batch/<name>" at
the global batch number."""

from __future__ import annotations

from typing import Any

import keras

from .base import Guarded, RunHandle, guarded, log_numbers, plain_params


class MlopsCallback(keras.callbacks.Callback, Guarded):
    """Log a Keras fit to the active run (or `run`, or a run of its own)."""

    integration = "Keras"

    def __init__(self, run: Any = None, *, log_every_n_batches: int = 0) -> None:
        super().__init__()
        self.handle = RunHandle(run, "keras")
        self.every = int(log_every_n_batches)
        self._batches = 0

    @guarded
    def on_train_begin(self, logs: dict | None = None) -> None:
        run = self.handle.get()
        params = plain_params(dict(self.params or {}), "fit.")
        opt = getattr(self.model, "optimizer", None)
        if opt is not None and hasattr(opt, "get_config"):
            params.update(plain_params(opt.get_config(), "optimizer."))
        run.log_params(params)

    @guarded
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._batches += 1
        if self.every and logs and self._batches % self.every == 0:
            log_numbers(
                self.handle.get(), {f"batch/{k}": v for k, v in logs.items()}, self._batches
            )

    @guarded
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs:
            log_numbers(self.handle.get(), logs, epoch)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._release()
