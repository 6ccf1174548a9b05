"""DP-SGD on torch through mj.privacy: real Opacus training on a tiny model, the budget
tracked in a real store, the Andon stop, the guarantee in the registry and its policy."""

from __future__ import annotations

import math
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import mlops_jupyter as mj  # noqa: E402
from mlops_jupyter.errors import InvalidInputError  # noqa: E402
from mlops_jupyter.privacy import PrivacyError, compute_epsilon  # noqa: E402
from mlops_jupyter.registry import StageTransitionError, model_card, model_version  # noqa: E402

DELTA = 1e-4
SIGMA, BATCH, N = 2.0, 16, 320  # q = 0.05


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Secure RNG|Full backward hook|Optimal order)")
        yield
    mj.privacy.set_promotion_policy(enabled=False)


def _setup(seed: int = 0, model=None):
    torch.manual_seed(seed)
    x = torch.randn(N, 6)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    model = model or torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    return model, opt, DataLoader(TensorDataset(x, y), batch_size=BATCH)


def _train(m, o, loader, epochs=1):
    for _ in range(epochs):
        for xb, yb in loader:
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(xb), yb).backward()
            o.step()


def test_clipped_per_example_gradients_are_bounded():
    model, opt, loader = _setup()
    m, o, _ = mj.privacy.make_private(
        model, opt, loader, noise_multiplier=0.0, max_grad_norm=0.05, delta=DELTA
    )
    x, y = loader.dataset.tensors
    big = 0
    for i in range(24):  # each example alone: the accumulated clipped gradient is its own
        o.zero_grad()
        torch.nn.functional.cross_entropy(m(x[i : i + 1] * 40), y[i : i + 1]).backward()
        raw = math.sqrt(sum(float(p.grad_sample.pow(2).sum()) for p in m.parameters()))
        big += raw > 0.05
        o.clip_and_accumulate()
        norm = math.sqrt(sum(float(p.summed_grad.pow(2).sum()) for p in m.parameters()))
        assert norm <= 0.05 * (1 + 1e-4)
        for p in m.parameters():
            p.summed_grad = None
    assert big > 0  # the bound was actually exercised


def test_training_logs_epsilon_params_and_the_guarantee():
    model, opt, loader = _setup()
    with mj.start_run("dp-torch") as run:
        m, o, dl = mj.privacy.make_private(
            model, opt, loader, noise_multiplier=SIGMA, max_grad_norm=1.0, delta=DELTA,
            accountant="rdp",
        )  # fmt: skip
        _train(m, o, dl, epochs=2)
        steps = mj.privacy.tracker(o).steps
        v = mj.register_model("dp-clf", model, metadata={"owner": "ana"})
    assert steps == 2 * len(dl)
    q = 1 / len(dl)
    expected = compute_epsilon(SIGMA, q, steps, DELTA, "rdp")
    detail = mj.get_run(run.id)
    p = detail["params"]
    assert p["privacy/noise_multiplier"] == SIGMA and p["privacy/max_grad_norm"] == 1.0
    assert p["privacy/delta"] == DELTA and p["privacy/sample_rate"] == pytest.approx(q)
    assert p["privacy/accountant"] == "rdp"
    pts = mj.metrics(run, keys="privacy/epsilon").sort("step")
    assert pts["step"].to_list() == list(range(1, steps + 1))
    assert pts["value"][-1] == pytest.approx(expected, rel=1e-9)
    assert pts["value"].is_sorted()
    assert mj.privacy.epsilon(run) == pytest.approx(expected, rel=1e-9)
    g = mj.privacy.model_guarantee("dp-clf", v)
    assert g["steps"] == steps and g["delta"] == DELTA and g["accountant"] == "rdp"
    assert mj.privacy.epsilon(model="dp-clf") == pytest.approx(expected, rel=1e-9)
    card = model_card("dp-clf", v)
    assert f"epsilon={expected:.4g}" in card and "owner: ana" in card
    assert run.status == "finished"


def test_budget_warns_then_stops_before_exceeding_with_a_checkpoint():
    model, opt, loader = _setup()
    q = BATCH / N
    limit = 7
    target = compute_epsilon(SIGMA, q, limit, DELTA, "rdp") * (1 + 1e-9)
    with mj.start_run("dp-budget") as run:
        m, o, dl = mj.privacy.make_private(
            model, opt, loader, noise_multiplier=SIGMA, max_grad_norm=1.0, delta=DELTA,
            accountant="rdp", target_epsilon=target, warn_at=0.5,
        )  # fmt: skip
        tracker = mj.privacy.tracker(o)
        assert tracker.max_steps == limit
        with pytest.raises(mj.privacy.PrivacyBudgetExhausted) as exc:
            for xb, yb in dl:
                o.zero_grad()
                torch.nn.functional.cross_entropy(m(xb), yb).backward()
                before = [p.detach().clone() for p in model.parameters()]
                o.step()
    # the refused step changed nothing and spent nothing
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert exc.value.steps == limit and tracker.steps == limit
    assert exc.value.epsilon <= target
    assert "target_epsilon" in str(exc.value)
    assert mj.get_run(run.id)["status"] == "stopped"
    alerts = mj.alerts(run)
    assert set(alerts["level"]) == {"warning", "critical"}
    assert all(r == "privacy_budget" for r in alerts["rule"])
    # what the sidebar's alerts route serves (the live widget reads the same run events)
    from mlops_jupyter.store import api_queries
    from mlops_jupyter.store import runs as rstore
    from mlops_jupyter.tracking.api import current_store

    store = current_store()
    served = api_queries.alerts(store, rstore.resolve_run(store, run.id))
    assert sorted(a["level"] for a in served) == ["critical", "warning"]
    warn = alerts.filter(alerts["level"] == "warning")["message"][0]
    assert "the budget allows 7 steps" in warn
    stop = alerts.filter(alerts["level"] == "critical")
    assert "stopped after 7 steps" in stop["message"][0]
    assert exc.value.checkpoint is not None and exc.value.checkpoint.exists()
    fresh = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    state = mj.resume(fresh, which=exc.value.checkpoint)
    assert state.step == limit and state.extra["privacy"]["steps"] == limit
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters(), strict=True))
    pts = mj.metrics(run, keys="privacy/epsilon")
    assert pts["step"].max() == limit and pts["value"].max() <= target
    assert mj.runs(status="stopped")["id"].to_list() == [run.id]


def test_calibrated_noise_spends_the_target_in_the_planned_epochs():
    model, opt, loader = _setup()
    with mj.start_run("dp-target") as run:
        m, o, dl = mj.privacy.make_private(
            model, opt, loader, target_epsilon=2.0, epochs=2, max_grad_norm=1.0, delta=DELTA,
            accountant="rdp",
        )  # fmt: skip
        _train(m, o, dl, epochs=2)  # exactly the planned epochs: no stop
    eps = mj.privacy.epsilon(run)
    assert 2.0 - 0.01 <= eps <= 2.0
    assert mj.get_run(run.id)["status"] == "finished"


def test_promotion_policy_requires_a_recorded_guarantee():
    model, opt, loader = _setup()
    plain = mj.register_model("pol", model)  # no run, no guarantee
    mj.promote_model("pol", plain, "staging")
    mj.privacy.set_promotion_policy(["production"], max_epsilon=50.0)
    with pytest.raises(StageTransitionError, match="no recorded privacy guarantee"):
        mj.promote_model("pol", plain, "production")
    with mj.start_run("dp-pol"):
        m, o, dl = mj.privacy.make_private(
            model, opt, loader, noise_multiplier=SIGMA, max_grad_norm=1.0, delta=DELTA,
            accountant="rdp",
        )  # fmt: skip
        _train(m, o, dl)
        private = mj.register_model("pol", model)
    mj.promote_model("pol", private, "staging")
    mj.promote_model("pol", private, "production")
    assert model_version("pol", stage="production")["version"] == private
    mj.privacy.set_promotion_policy(["staging"], max_epsilon=1e-3)
    v3 = mj.register_model("pol", model, metadata={"privacy": {"epsilon": 0.5, "delta": 1e-6}})
    with pytest.raises(StageTransitionError, match="exceeds the policy's max_epsilon"):
        mj.promote_model("pol", v3, "staging")
    mj.privacy.set_promotion_policy(enabled=False)
    mj.promote_model("pol", v3, "staging")


def test_bad_input_names_the_fix():
    model, opt, loader = _setup()
    with pytest.raises(InvalidInputError, match=r"1/N = 1/320.*delta=0.0001|1/N = 1/320"):
        mj.privacy.make_private(model, opt, loader, noise_multiplier=1.0, delta=1 / 300)
    with pytest.raises(InvalidInputError, match="noise_multiplier must be a finite number >= 0"):
        mj.privacy.make_private(model, opt, loader, noise_multiplier=-1.0, delta=DELTA)
    with pytest.raises(InvalidInputError, match="give noise_multiplier=, or target_epsilon="):
        mj.privacy.make_private(model, opt, loader, delta=DELTA)
    with pytest.raises(InvalidInputError, match="delta is required"):
        mj.privacy.make_private(model, opt, loader, noise_multiplier=1.0)
    with pytest.raises(InvalidInputError, match="max_grad_norm must be > 0"):
        mj.privacy.make_private(
            model, opt, loader, noise_multiplier=1.0, max_grad_norm=0.0, delta=DELTA
        )
    bn = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    m2, o2, l2 = _setup(model=bn)
    with pytest.raises(PrivacyError, match="BatchNorm.*GroupNorm.*ModuleValidator.fix"):
        mj.privacy.make_private(m2, o2, l2, noise_multiplier=1.0, delta=DELTA)
    with pytest.raises(InvalidInputError, match="torch.nn.Module or an mlx.nn.Module"):
        mj.privacy.make_private(object(), opt, loader, noise_multiplier=1.0, delta=DELTA)
