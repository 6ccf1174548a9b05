"""scikit-learn, XGBoost and LightGBM integrations: real trainings on synthetic data; the
stored params and series equal what the framework reports."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mlops_jupyter as mj


def _data(n=200, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    return X[:150], y[:150], X[150:], y[150:]


def series(run, key) -> list[float]:
    f = mj.metrics(run.id, key).sort("step")
    return f["value"].to_list()


def steps(run, key) -> list[int]:
    return mj.metrics(run.id, key).sort("step")["step"].to_list()


# -- XGBoost ------------------------------------------------------------------------------
def test_xgboost_sklearn_api_series_equal_evals_result():
    xgb = pytest.importorskip("xgboost")
    from mlops_jupyter.integrations.xgboost import MlopsCallback

    X, y, Xv, yv = _data()
    with mj.start_run("xgb") as run:
        reg = xgb.XGBRegressor(n_estimators=8, max_depth=2, callbacks=[MlopsCallback()])
        reg.fit(X, y, eval_set=[(X, y), (Xv, yv)], verbose=False)
    ev = reg.evals_result()
    for data, mets in ev.items():
        for name, values in mets.items():
            assert series(run, f"{data}-{name}") == pytest.approx(values, rel=1e-12)
            assert steps(run, f"{data}-{name}") == list(range(len(values)))
    imp = mj.load_media(run, "feature_importance")
    want = reg.get_booster().get_score(importance_type="gain")
    assert dict(zip(imp["feature"], imp["importance"])) == pytest.approx(want)
    assert imp["importance"].to_list() == sorted(imp["importance"].to_list(), reverse=True)


def test_xgboost_autolog_train_logs_params_and_is_reversible():
    xgb = pytest.importorskip("xgboost")
    X, y, Xv, yv = _data()
    orig = xgb.train
    assert mj.autolog("xgboost") == ["xgboost"]
    try:
        assert xgb.train is not orig
        result: dict = {}
        params = {"max_depth": 2, "eta": 0.3, "objective": "reg:squarederror"}
        with mj.start_run("xgb-auto") as run:
            xgb.train(
                params,
                xgb.DMatrix(X, y),
                num_boost_round=5,
                evals=[(xgb.DMatrix(Xv, yv), "val")],
                evals_result=result,
                verbose_eval=False,
            )
    finally:
        mj.autolog("xgboost", disable=True)
    assert xgb.train is orig
    assert series(run, "val-rmse") == pytest.approx(result["val"]["rmse"], rel=1e-12)
    p = mj.get_run(run.id)["params"]
    assert p["max_depth"] == 2 and p["eta"] == 0.3


def test_xgboost_failing_integration_warns_once_and_training_goes_on():
    xgb = pytest.importorskip("xgboost")
    from mlops_jupyter.integrations.xgboost import MlopsCallback

    X, y, Xv, yv = _data()
    ended = mj.start_run("ended")
    ended.end()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        reg = xgb.XGBRegressor(n_estimators=6, callbacks=[MlopsCallback(run=ended)])
        reg.fit(X, y, eval_set=[(Xv, yv)], verbose=False)
    ours = [x for x in w if "XGBoost integration failed" in str(x.message)]
    assert len(ours) == 1
    assert len(reg.evals_result()["validation_0"]["rmse"]) == 6  # trained to the end


# -- LightGBM -----------------------------------------------------------------------------
def test_lightgbm_series_equal_evals_result():
    lgb = pytest.importorskip("lightgbm")
    from mlops_jupyter.integrations.lightgbm import mlops_callback

    X, y, Xv, yv = _data()
    with mj.start_run("lgb") as run:
        reg = lgb.LGBMRegressor(n_estimators=7, num_leaves=4, min_child_samples=5, verbose=-1)
        reg.fit(X, y, eval_X=(Xv,), eval_y=(yv,), callbacks=[mlops_callback()])
    ev = reg.evals_result_
    assert ev
    for data, mets in ev.items():
        for name, values in mets.items():
            assert series(run, f"{data}-{name}") == pytest.approx(values, rel=1e-12)
            assert steps(run, f"{data}-{name}") == list(range(len(values)))
    p = mj.get_run(run.id)["params"]
    assert p["num_leaves"] == 4
    imp = mj.load_media(run, "feature_importance")
    want = reg.booster_.feature_importance(importance_type="gain")
    got = dict(zip(imp["feature"], imp["importance"]))
    assert [got[n] for n in reg.booster_.feature_name()] == pytest.approx(list(want))


def test_lightgbm_autolog_train():
    lgb = pytest.importorskip("lightgbm")
    X, y, Xv, yv = _data()
    mj.autolog("lightgbm")
    try:
        rec: dict = {}
        with mj.start_run("lgb-auto") as run:
            lgb.train(
                {"objective": "regression", "num_leaves": 4, "verbose": -1},
                lgb.Dataset(X, y),
                num_boost_round=5,
                valid_sets=[lgb.Dataset(Xv, yv)],
                valid_names=["val"],
                callbacks=[lgb.record_evaluation(rec)],
            )
    finally:
        mj.autolog("lightgbm", disable=True)
    assert series(run, "val-l2") == pytest.approx(rec["val"]["l2"], rel=1e-12)


# -- scikit-learn -------------------------------------------------------------------------
def test_sklearn_log_fit_scores_params_curves_and_register():
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPRegressor

    from mlops_jupyter.integrations.sklearn import log_fit

    X, y, Xv, yv = _data()
    with mj.start_run("sk") as run:
        m = MLPRegressor(hidden_layer_sizes=(8,), max_iter=30, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # not converged in 30 iterations
            m.fit(X, y)
        scores = log_fit(m, X, y, X_val=Xv, y_val=yv, register="mlp")
    assert scores["training_score"] == m.score(X, y)
    assert series(run, "validation_score") == [m.score(Xv, yv)]
    assert series(run, "loss_curve") == pytest.approx(m.loss_curve_, rel=1e-12)
    p = mj.get_run(run.id)["params"]
    assert p["hidden_layer_sizes"] == [8] and p["max_iter"] == 30
    back = mj.load_model("mlp", trusted=True)
    np.testing.assert_array_equal(back.predict(Xv), m.predict(Xv))


def test_sklearn_autolog_logs_outer_fit_only_and_disable_restores():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    orig = Ridge.fit
    X, y, _, _ = _data()
    patched = mj.autolog("sklearn")
    try:
        assert patched == ["sklearn"] and Ridge.fit is not orig
        with mj.start_run("pipe") as run:
            pipe = make_pipeline(StandardScaler(), Ridge(alpha=0.5)).fit(X, y)
        with mj.start_run("search") as srun:
            gs = GridSearchCV(Ridge(), {"alpha": [0.1, 1.0]}, cv=3).fit(X, y)
    finally:
        mj.autolog("sklearn", disable=True)
    assert Ridge.fit is orig
    assert series(run, "training_score") == [pipe.score(X, y)]  # one point: the pipeline
    p = mj.get_run(run.id)["params"]
    assert p["estimator_class"].endswith("Pipeline")
    assert series(srun, "best_cv_score") == [pytest.approx(gs.best_score_)]
    assert mj.get_run(srun.id)["params"]["best.alpha"] == gs.best_params_["alpha"]


def test_sklearn_autolog_failure_warns_once_and_fit_returns():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LinearRegression

    class Broken(LinearRegression):
        def score(self, X, y, sample_weight=None):  # the autolog's training score fails
            raise RuntimeError("boom")

    X, y, _, _ = _data()
    mj.autolog("sklearn")
    try:
        with mj.start_run("live"):
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                m = Broken().fit(X, y)
                Broken().fit(X, y)
    finally:
        mj.autolog("sklearn", disable=True)
    assert hasattr(m, "coef_")
    assert len([x for x in w if "scikit-learn autolog failed" in str(x.message)]) == 1


def test_autolog_names_checked():
    with pytest.raises(mj.InvalidInputError, match="lightning"):
        mj.autolog("lightning")
    with pytest.raises(mj.InvalidInputError, match="unknown"):
        mj.autolog("nope")


def test_sklearn_autolog_without_training_score():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import Ridge

    X, y, _, _ = _data()
    mj.autolog("sklearn", training_score=False)
    try:
        with mj.start_run("no-score") as run:
            Ridge().fit(X, y)
    finally:
        mj.autolog("sklearn", disable=True)
    assert series(run, "training_score") == []
    assert mj.get_run(run.id)["params"]["alpha"] == 1.0


def test_lightgbm_failing_integration_warns_once_and_training_goes_on():
    lgb = pytest.importorskip("lightgbm")
    from mlops_jupyter.integrations.lightgbm import mlops_callback

    X, y, Xv, yv = _data()
    ended = mj.start_run("ended")
    ended.end()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        booster = lgb.train(
            {"objective": "regression", "verbose": -1},
            lgb.Dataset(X, y),
            num_boost_round=6,
            valid_sets=[lgb.Dataset(Xv, yv)],
            callbacks=[mlops_callback(run=ended)],
        )
    assert booster.current_iteration() == 6
    assert len([x for x in w if "LightGBM integration failed" in str(x.message)]) == 1
