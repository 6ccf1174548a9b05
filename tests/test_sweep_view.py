"""The live sweep view: trials/s, best so far, per-worker counts and the parallel
coordinates of params against the objective (inline SVG)."""

from __future__ import annotations

import re

import pytest

from mlops_jupyter.hpo.view import SweepView

optuna = pytest.importorskip("optuna")


def test_counts_per_worker_rates_and_best():
    v = SweepView("sweep s", "maximize")
    v.add(0, "complete", 1.0, {"opt": "adam"}, worker="a:1")
    v.add(1, "fail", None, {"opt": "sgd"}, worker="b:2")
    v.add(2, "complete", 3.0, {"opt": "sgd"}, worker="b:2")
    v.add(3, "pruned", None, {"opt": "adam"})
    assert v.workers == {
        "a:1": {"complete": 1},
        "b:2": {"fail": 1, "complete": 1},
        "this process": {"pruned": 1},
    }
    assert v.best == (2, 3.0, {"opt": "sgd"})
    overall, recent = v.rates()
    assert overall > 0 and recent > 0
    text = v.summary()
    assert "trials/s" in text and "b:2: 1 complete, 1 fail" in text
    html = v._repr_html_()
    assert html.count("<tr><td>") == 3  # one row per worker
    assert "&lt;" not in v.title


def test_parallel_coordinates_scales_axes():
    v = SweepView("<sweep>", "minimize")
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True),
        "depth": optuna.distributions.IntDistribution(1, 8),
        "opt": optuna.distributions.CategoricalDistribution(["adam", "sgd"]),
    }
    rows = [(1e-3, 1, "adam", 5.0), (1e-2, 8, "sgd", 1.0), (3e-3, 4, "adam", 2.0)]
    for i, (lr, d, o, val) in enumerate(rows):
        v.add(i, "complete", val, {"lr": lr, "depth": d, "opt": o}, distributions=dists)
    svg = v._parcoords()
    assert svg.count("<polyline") == 3
    # lr is log-scaled from its distribution (one decade: the heuristic alone would not)
    assert "lr (log)" in svg and "depth (log)" not in svg
    assert ">adam<" in svg and ">sgd<" in svg and ">objective<" in svg
    # the best line (value 1.0) is the darkest colour, the worst the lightest
    strokes = re.findall(r'stroke="(#[0-9a-f]{6})"', svg)[:3]
    assert strokes[1] == "#21318c" and strokes[0] == "#e6dc5a"
    # categorical levels evenly spaced: adam at the bottom, sgd at the top of its axis
    ys = [re.findall(r"[\d.]+,([\d.]+)", p) for p in re.findall(r'points="([^"]+)"', svg)]
    assert float(ys[0][2]) > float(ys[1][2])
    assert "&lt;sweep&gt;" in v._repr_html_()  # names are escaped


def test_heuristic_log_and_empty_chart():
    v = SweepView("s", "minimize")
    assert v._parcoords() == ""
    v.add(0, "complete", 1.0, {"c": 1e-5})
    v.add(1, "complete", 2.0, {"c": 1.0})
    assert "c (log)" in v._parcoords()  # positive, five decades apart
