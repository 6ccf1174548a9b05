"""Sticky traffic assignment for rollouts: the same key always gets the same variant (in
this process and another with a different hash seed), the observed split over 100k keys is
within 1 % of the configured one, and a growing canary keeps its users."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.serving.rollout import (
    BUCKETS,
    Split,
    bucket,
    canary_split,
    parse_every,
    parse_ramp,
    parse_split,
)

KEYS = [f"user-{i}" for i in range(100_000)]


@pytest.mark.parametrize("text", ["v3=90,v4=10", "a=50,b=30,c=20", "v1=99.5,v2=0.5"])
def test_observed_split_is_within_one_percent_of_the_configured_one(text):
    split = parse_split(text)
    counts = dict.fromkeys(split.percent(), 0)
    for k in KEYS:
        counts[split.assign(k, "classifier")] += 1
    for name, pct in split.percent().items():
        assert abs(100 * counts[name] / len(KEYS) - pct) < 1.0, (name, counts)


def test_assignment_is_sticky_across_processes_and_independent_per_model():
    split = parse_split("v3=90,v4=10")
    keys = KEYS[:2000]
    here = [split.assign(k, "classifier") for k in keys]
    assert here == [split.assign(k, "classifier") for k in keys]
    code = (
        "import json, sys\n"
        "from mlops_jupyter.serving.rollout import parse_split\n"
        "s = parse_split('v3=90,v4=10')\n"
        "keys = [f'user-{i}' for i in range(2000)]\n"
        "print(json.dumps([s.assign(k, 'classifier') for k in keys]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == here
    # another model's users are split on their own: not the same 10 %
    other = [split.assign(k, "ranker") for k in keys]
    assert other != here


def test_a_growing_canary_keeps_every_user_it_had():
    seen = {k for k in KEYS if canary_split("v4", "v3", 5).assign(k, "m") == "v4"}
    for pct in (25, 50, 100):
        now = {k for k in KEYS if canary_split("v4", "v3", pct).assign(k, "m") == "v4"}
        assert seen <= now and abs(100 * len(now) / len(KEYS) - pct) < 1.0
        seen = now
    assert canary_split("v4", "v3", 100).weights == [("v4", BUCKETS)]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=20))
def test_any_key_and_salt_gets_a_bucket_and_a_variant(key, salt):
    b = bucket(key, salt)
    assert 0 <= b < BUCKETS and b == bucket(key, salt)
    assert parse_split("x=33.33,y=33.33,z=33.34").assign(key, salt) in {"x", "y", "z"}


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "split must"),
        ("v3=90", "add up to 100"),
        ("v3=90,v4=20", "add up to 100"),
        ("v3=100,v3=0.5", "must be a percentage|named twice"),
        ("v3", "VARIANT=PERCENT"),
        ("v3=abc,v4=10", "percentage"),
        ("v3=nan,v4=10", "percentage"),
        ("v3=-10,v4=110", "percentage"),
        ("v3=90.001,v4=9.999", "two decimals"),
        ("v 3=90,v4=10", "letters, digits"),
        ("v3=50,v3=50", "named twice"),
    ],
)
def test_bad_splits_are_refused_clearly(text, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_split(text)


def test_ramps_intervals_and_bad_values():
    assert parse_ramp("5,25,50,100") == [5, 25, 50, 100]
    assert parse_every("30m") == 1800 and parse_every("2h") == 7200 and parse_every("90s") == 90
    for bad in ("", "5,25", "25,5,100", "5,5,100", "0,100", "5,x,100"):
        with pytest.raises(InvalidInputError):
            parse_ramp(bad)
    for bad in ("", "30", "0m", "-5m", "5 weeks", None):
        with pytest.raises(InvalidInputError, match="interval"):
            parse_every(bad)
    with pytest.raises(InvalidInputError, match="request key"):
        bucket(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="weight must be > 0"):
        Split([("a", BUCKETS), ("b", 0)])
