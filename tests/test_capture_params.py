"""Literal-param extraction and `parameters` cell detection (pure functions)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlops_jupyter.capture import is_parameters_comment, literal_params


def test_literals_of_every_kind():
    src = """
lr = 3e-4
layers = [64, 64]
opt = "adam"
use_bn = True
dropout = None
neg = -0.5
sched = {"warmup": 10, "decay": [0.1, 0.01]}
shape = (3, 224, 224)
classes = {"b", "a"}
steps = 2**10
half = 1e-3 * 4
label = "run" + "-" + "a"
"""
    assert literal_params(src) == {
        "lr": 3e-4,
        "layers": [64, 64],
        "opt": "adam",
        "use_bn": True,
        "dropout": None,
        "neg": -0.5,
        "sched": {"warmup": 10, "decay": [0.1, 0.01]},
        "shape": [3, 224, 224],
        "classes": ["a", "b"],
        "steps": 1024,
        "half": pytest.approx(4e-3),
        "label": "run-a",
    }


def test_assignment_forms():
    src = "a = b = 1\nc, d = 2, 'x'\ne: float = 0.1\n[f, g] = [3, 4]\nh: int\n"
    assert literal_params(src) == {"a": 1, "b": 1, "c": 2, "d": "x", "e": 0.1, "f": 3, "g": 4}


def test_non_literals_private_names_and_nested_code_are_ignored():
    src = """
import numpy as np
x = np.zeros(3)
y = other
z = f(3)
_private = 1
obj.attr = 2
items[0] = 3
for i in range(3):
    inner = 5
def fn():
    local = 6
if True:
    cond = 7
"""
    assert literal_params(src) == {}


def test_later_assignment_wins_and_non_literal_reassignment_forgets():
    assert literal_params("lr = 0.1\nlr = 0.2") == {"lr": 0.2}
    assert literal_params("lr = 0.1\nlr = compute()") == {}
    assert literal_params("n = 1\nn += 1") == {}
    assert literal_params("a, b = 1, 2\na, b = f()") == {}


def test_ipython_syntax_and_bad_code():
    src = "%matplotlib inline\n!ls\nlr = 0.1\nlen?\nepochs = 3"
    assert literal_params(src) == {"lr": 0.1, "epochs": 3}
    assert literal_params("lr = (") == {}
    assert literal_params("") == {}
    assert literal_params("print('no assignments')") == {}


def test_huge_and_dangerous_literals_are_not_params():
    assert literal_params(f"data = {list(range(5000))}") == {}
    assert literal_params("x = 10**10**10") == {}
    assert literal_params("x = 1/0") == {}
    assert literal_params("c = 1j") == {}
    assert literal_params("b = b'raw'") == {}
    nan = literal_params("x = float('nan')\ny = 1e999")
    assert list(nan) == ["y"] and math.isinf(nan["y"])


def test_parameters_comment():
    assert is_parameters_comment("# Parameters\nx = 1")
    assert is_parameters_comment("\n  #parameters\nx = 1")
    assert is_parameters_comment("# parameters (papermill)\nx = 1")
    assert not is_parameters_comment("x = 1\n# parameters")
    assert not is_parameters_comment("# parameterless\nx = 1")
    assert not is_parameters_comment("")


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.integers()))
def test_roundtrip_of_generated_int_assignments(d):
    src = "\n".join(f"{k} = {v!r}" for k, v in d.items())
    import keyword

    expect = {k: v for k, v in d.items() if not keyword.iskeyword(k)}
    if any(keyword.iskeyword(k) for k in d):
        assert literal_params(src) == {}  # not valid Python: nothing, no exception
    else:
        assert literal_params(src) == expect


@given(st.text(max_size=300))
def test_any_text_gives_a_dict_and_never_raises(src):
    assert isinstance(literal_params(src), dict)
    assert isinstance(is_parameters_comment(src), bool)
