"""PyTorch Lightning: a Logger.

    from mlops_jupyter.integrations.lightning import MlopsLogger
    trainer = L.Trainer(logger=MlopsLogger(log_model="mnist-mlp"), max_epochs=3)

Hyperparameters (`save_hyperparameters()`) become params, every `self.log(...)` value a
metric at the trainer's global step; each checkpoint Lightning's ModelCheckpoint saves is
also written to the checkpoint store with `mj.checkpoint` (weights, optimizer, epoch,
metrics, best by the monitored metric), and `log_model` registers the trained module
when training ends."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

try:
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only
except ImportError:  # the standalone `pytorch_lightning` package
    from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
    from pytorch_lightning.utilities import rank_zero_only

from .base import Guarded, RunHandle, guarded, log_numbers, number, plain_params


class MlopsLogger(Logger, Guarded):
    """A Lightning logger writing to the active run (or `run`, or a run of its own named
    `name`). `checkpoints`: mirror ModelCheckpoint saves into `mj.checkpoint` (default
    True); `log_model`: a registry name to register the module under when training ends."""

    integration = "Lightning"

    def __init__(
        self,
        name: str | None = None,
        run: Any = None,
        *,
        checkpoints: bool = True,
        log_model: str | None = None,
        keep_last: int = 3,
    ) -> None:
        super().__init__()
        self.handle = RunHandle(run, name or "lightning")
        self.checkpoints = checkpoints
        self.log_model = log_model
        self.keep_last = keep_last
        self._module: Any = None

    @property
    def name(self) -> str:
        return self.handle.name or "lightning"

    @property
    def version(self) -> str:
        r = self.handle.given or self.handle.owned
        return r.id if r is not None else ""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The mlops-jupyter Run being logged to."""
        return self.handle.get()

    @rank_zero_only
    @guarded
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kw: Any) -> None:
        if isinstance(params, Namespace):
            params = vars(params)
        flat = plain_params(dict(params))
        if flat:
            self.handle.get().log_params(flat)

    @rank_zero_only
    @guarded
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        log_numbers(self.handle.get(), metrics, step)

    @rank_zero_only
    @guarded
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning hands every logger the module here at the start of fit: the checkpoint
        # mirror and log_model need it, the Logger API gives it nowhere else
        self._module = model

    @rank_zero_only
    @guarded
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        module = self._module
        if not self.checkpoints or module is None:
            return
        trainer = module.trainer
        from ..registry.checkpoints import checkpoint

        metrics = {}
        for k, v in trainer.callback_metrics.items():
            if (f := number(v)) is not None:
                metrics[k] = f
        monitor = getattr(checkpoint_callback, "monitor", None)
        opts = trainer.optimizers
        checkpoint(
            model=module,
            optimizer=opts[0] if len(opts) == 1 else None,
            epoch=trainer.current_epoch,
            step=trainer.global_step,
            metrics=metrics,
            best=monitor,
            mode=getattr(checkpoint_callback, "mode", "min"),
            keep_last=self.keep_last,
            name=self.handle.get().name,  # the series mj.resume() finds for this run name
        )

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._finalize(status)
        self._release("finished" if status == "success" else "failed")

    @guarded
    def _finalize(self, status: str) -> None:
        if self.log_model and status == "success" and self._module is not None:
            from ..registry import register_model

            register_model(self.log_model, self._module, run=self.handle.get())
