"""PyTorch Lightning logger: a small MLP trained for real; stored params and metrics equal
what the trainer reports, checkpoints land in the checkpoint store, the model is
registered when asked."""

from __future__ import annotations

import warnings

import pytest

import mlops_jupyter as mj

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

from mlops_jupyter.integrations.lightning import MlopsLogger  # noqa: E402


class TinyMLP(L.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(1, keepdim=True)
    ds = torch.utils.data.TensorDataset(x, y)
    return (
        torch.utils.data.DataLoader(ds, batch_size=16),
        torch.utils.data.DataLoader(ds, batch_size=32),
    )


def _trainer(tmp_path, logger, **kw):
    return L.Trainer(
        max_epochs=3,
        logger=logger,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
        **kw,
    )


def test_logger_params_metrics_checkpoints_and_model(tmp_path):
    train, val = _loaders()
    model = TinyMLP(hidden=8, lr=0.05)
    with mj.start_run("lightning") as run:
        cb = L.callbacks.ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=1)
        trainer = _trainer(tmp_path, MlopsLogger(log_model="tiny-mlp"), callbacks=[cb])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few workers, small batches
            trainer.fit(model, train, val)
    detail = mj.get_run(run.id)
    assert detail["params"]["hidden"] == 8 and detail["params"]["lr"] == 0.05
    stored = mj.metrics(run.id)
    last = {k: g.sort("step")["value"][-1] for (k,), g in stored.group_by("key")}
    reported = {k: float(v) for k, v in trainer.callback_metrics.items()}
    common = set(last) & set(reported)
    assert {"train_loss_step", "train_loss_epoch", "val_loss"} <= common
    for k in common:
        assert last[k] == pytest.approx(reported[k], rel=1e-6), k
    # per-step points: one per optimizer step (64/16 = 4 per epoch, 3 epochs)
    steps = stored.filter(stored["key"] == "train_loss_step").sort("step")["step"].to_list()
    assert len(steps) == 12
    # checkpoints mirrored into the checkpoint store, best by val_loss
    from mlops_jupyter.registry.checkpoints import checkpoints

    ck = checkpoints(run.name)
    assert ck.height >= 1
    # the registered model predicts like the trained one
    back = mj.load_model("tiny-mlp", trusted=True)
    x = torch.randn(5, 4)
    torch.testing.assert_close(back(x), model(x))


def test_logger_starts_its_own_run_and_failure_warns_once(tmp_path):
    train, val = _loaders()
    logger = MlopsLogger(name="own", checkpoints=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp_path, logger).fit(TinyMLP(), train, val)
    runs = mj.runs()
    assert runs.filter(runs["name"] == "own")["status"].to_list() == ["finished"]
    assert mj.active_run() is None
    # a run that cannot be written to: training finishes, one warning
    ended = mj.start_run("ended")
    ended.end()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = _trainer(tmp_path, MlopsLogger(run=ended, checkpoints=False))
        t.fit(TinyMLP(), train, val)
    assert t.current_epoch == 3
    assert len([x for x in w if "Lightning integration failed" in str(x.message)]) == 1
