"""Hugging Face Transformers: a TrainerCallback.

    trainer = Trainer(model, args, ..., callbacks=[MlopsCallback()])

`TrainingArguments` (and the model config) become params; every value the Trainer logs
(train loss, learning rate, eval metrics, the final summary) becomes a metric at the
global step, exactly as in `trainer.state.log_history`; when training ends, the best
checkpoint (`load_best_model_at_end` / `metric_for_best_model`) is stored as the artifact
`best_checkpoint`, and `log_model` registers the trained model."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from .base import Guarded, RunHandle, guarded, log_numbers, plain_params


class MlopsCallback(TrainerCallback, Guarded):
    """Log a Trainer's arguments, metrics and best checkpoint to the active run (or `run`,
    or a run of its own)."""

    integration = "Transformers"

    def __init__(
        self, run: Any = None, *, log_checkpoint: bool = True, log_model: str | None = None
    ) -> None:
        self.handle = RunHandle(run, "transformers")
        self.log_checkpoint = log_checkpoint
        self.log_model = log_model

    @guarded
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if not state.is_world_process_zero:
            return None
        run = self.handle.get()
        params = plain_params(args.to_dict())
        cfg = getattr(model, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            params.update(plain_params(cfg.to_dict(), "model."))
        run.log_params(params)
        return None

    @guarded
    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any):
        if state.is_world_process_zero and logs:
            log_numbers(self.handle.get(), logs, state.global_step)
        return None

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        self._end(state, model)
        self._release()
        return None

    @guarded
    def _end(self, state: Any, model: Any) -> None:
        if not state.is_world_process_zero:
            return
        run = self.handle.get()
        best = state.best_model_checkpoint
        if best:
            run.set_tags({"best_checkpoint": str(best)})
            if state.best_metric is not None:
                run.log_params({"best_metric": float(state.best_metric)})
            if self.log_checkpoint:
                run.log_artifact(best, name="best_checkpoint")
        if self.log_model and model is not None:
            from ..registry import register_model

            register_model(self.log_model, model, run=run)
