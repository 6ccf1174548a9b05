"""Transformers TrainerCallback: a BERT built from a tiny config (no download) trained for
real; stored metrics equal `trainer.state.log_history`, TrainingArguments are params, the
best checkpoint is stored."""

from __future__ import annotations

import warnings

import pytest

import mlops_jupyter as mj

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from mlops_jupyter.integrations.transformers import MlopsCallback  # noqa: E402


class _Data(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 60, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 30).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _trainer(tmp_path, callback, **args):
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    targs = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_train_epochs=2,
        logging_steps=2,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        learning_rate=1e-3,
        **args,
    )
    return transformers.Trainer(
        model=model,
        args=targs,
        train_dataset=_Data(32, 0),
        eval_dataset=_Data(16, 1),
        callbacks=[callback],
    )


def test_callback_matches_log_history_params_and_best_checkpoint(tmp_path):
    with mj.start_run("hf") as run:
        trainer = _trainer(tmp_path, MlopsCallback(log_model="tiny-bert"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
    stored = mj.metrics(run.id)
    got = {(k, s): v for k, s, v in stored.select("key", "step", "value").iter_rows()}
    n = 0
    for entry in trainer.state.log_history:
        step = entry["step"]
        for k, v in entry.items():
            if k == "step" or not isinstance(v, (int, float)):
                continue
            assert got[(k, step)] == pytest.approx(float(v), rel=1e-12), (k, step)
            n += 1
    assert n > 10 and ("eval_loss", trainer.state.global_step) in got
    detail = mj.get_run(run.id)
    assert detail["params"]["learning_rate"] == 1e-3
    assert detail["params"]["per_device_train_batch_size"] == 8
    assert detail["params"]["model.hidden_size"] == 16
    assert detail["tags"]["best_checkpoint"] == trainer.state.best_model_checkpoint
    names = {a["name"] if isinstance(a, dict) else a for a in detail["artifacts"]}
    assert any(str(n).startswith("best_checkpoint/") for n in names)
    assert mj.models()["name"].to_list() == ["tiny-bert"]


def test_failing_callback_warns_once_and_training_finishes(tmp_path):
    ended = mj.start_run("ended")
    ended.end()
    trainer = _trainer(tmp_path, MlopsCallback(run=ended))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        trainer.train()
    assert trainer.state.global_step == 8
    assert len([x for x in w if "Transformers integration failed" in str(x.message)]) == 1
