"""Rich media per step: round trips through the real store (PNG, parquet, WAV, text)."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mlops_jupyter as mj
from mlops_jupyter.errors import ArtifactNotFoundError, InvalidInputError, NoActiveRunError
from mlops_jupyter.media import encode as enc


def test_image_round_trip_numpy_uint8_hwc_and_grey():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    rgba = rng.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    with mj.start_run("img") as run:
        mj.log_image("samples", rgb, step=0)
        mj.log_image("grey", grey, step=5)
        mj.log_image("alpha", rgba)
        rgb[:] = 0  # the caller reuses its buffer: the logged image must not change
    np.testing.assert_array_equal(mj.load_media(run, "samples", 0), rng_copy(0, rgb.shape))
    np.testing.assert_array_equal(mj.load_media(run, "grey", 5), grey)
    np.testing.assert_array_equal(mj.load_media(run.id, "alpha"), rgba)
    frame = mj.media(run)
    assert frame.select("key", "step", "kind", "mime").rows() == [
        ("alpha", 0, "image", "image/png"),
        ("grey", 5, "image", "image/png"),
        ("samples", 0, "image", "image/png"),
    ]
    # content-addressed: the digest is the sha256 of the stored PNG
    import hashlib

    for d in frame["digest"]:
        p = run.store.artifacts.blob_file(d)
        assert hashlib.sha256(p.read_bytes()).hexdigest() == d


def rng_copy(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_image_float_chw_torch_and_pil():
    torch = pytest.importorskip("torch")
    PIL = pytest.importorskip("PIL.Image")
    x = torch.rand(3, 10, 12)
    pil = PIL.fromarray(np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3))
    with mj.start_run("img") as run:
        mj.log_image("t", x, step=1)
        mj.log_image("p", pil, step=2)
        mj.log_image("f", x.permute(1, 2, 0).numpy().astype(np.float64), step=3)
    want = (x.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(mj.load_media(run, "t", 1), want)
    np.testing.assert_array_equal(mj.load_media(run, "f", 3), want)
    np.testing.assert_array_equal(mj.load_media(run, "p"), np.asarray(pil))
    # PIL reads our PNGs as the same pixels
    import io

    d = mj.media(run, "t")["digest"][0]
    img = PIL.open(io.BytesIO((run.store.artifacts.blob_file(d)).read_bytes()))
    np.testing.assert_array_equal(np.asarray(img), want)


def test_mlx_image_if_installed():
    mx = pytest.importorskip("mlx.core")
    a = np.random.default_rng(1).random((6, 7, 3)).astype(np.float32)
    with mj.start_run("mlx") as run:
        mj.log_image("m", mx.array(a), step=0)
    np.testing.assert_array_equal(mj.load_media(run, "m", 0), (a * 255 + 0.5).astype(np.uint8))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 20), st.integers(1, 20), st.sampled_from([1, 3, 4])),
    )
)
def test_png_codec_property(a):
    out = enc.decode_png(enc.encode_png(enc.image_array(a)))
    np.testing.assert_array_equal(out, a[..., 0] if a.shape[-1] == 1 else a)


def test_step_none_counts_per_key_and_relogging_replaces():
    with mj.start_run("steps") as run:
        for i in range(3):
            mj.log_text("gen", f"sample {i}")
        mj.log_text("gen", "replaced", step=1)
        mj.log_text("other", "x", step=10)
        mj.log_text("other", "y")
    f = mj.media(run)
    assert f.select("key", "step").rows() == [
        ("gen", 0),
        ("gen", 1),
        ("gen", 2),
        ("other", 10),
        ("other", 11),
    ]
    assert mj.load_media(run, "gen", 1) == "replaced"
    assert mj.load_media(run, "gen") == "sample 2"  # latest step


def test_table_round_trip_polars_and_pandas():
    pd = pytest.importorskip("pandas")
    df = pl.DataFrame({"id": [1, 2, 3], "pred": [0.1, 0.5, 0.9], "label": ["a", "b", "ü"]})
    pdf = pd.DataFrame({"x": [1.5, 2.5], "y": ["u", "v"]})
    with mj.start_run("tables") as run:
        mj.log_table("preds", df, step=4)
        mj.log_table("pd", pdf, step=0)
        pdf.loc[0, "x"] = 99.0  # mutated after logging
    assert mj.load_media(run, "preds", 4).equals(df)
    back = mj.load_media(run, "pd", 0)
    assert back.to_dict(as_series=False) == {"x": [1.5, 2.5], "y": ["u", "v"]}


def test_audio_round_trip():
    t = np.linspace(0, 1, 8000, endpoint=False)
    mono = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stereo = np.stack([mono, -mono], axis=1)
    with mj.start_run("audio") as run:
        mj.log_audio("tone", mono, 8000, step=0)
        mj.log_audio("st", stereo, 16000, step=0)
        mj.log_audio("pcm", (mono * 32767).astype(np.int16), 8000, step=0)
    a = mj.load_media(run, "tone", 0)
    assert a.sample_rate == 8000 and a.samples.shape == mono.shape
    np.testing.assert_allclose(a.samples, mono, atol=1 / 32767)
    s = mj.load_media(run, "st", 0)
    assert s.sample_rate == 16000 and s.samples.shape == (8000, 2)
    np.testing.assert_allclose(s.samples, stereo, atol=1 / 32767)
    p = mj.load_media(run, "pcm", 0)
    np.testing.assert_array_equal(
        np.round(p.samples * 32767).astype(np.int16), (mono * 32767).astype(np.int16)
    )


def test_matplotlib_figure_renders_to_png():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1, 2], [1, 0, 1])
    with mj.start_run("fig") as run:
        mj.log_figure("curve", fig, step=0)
        mj.log_figure("axes", ax, step=0)
    plt.close(fig)
    img = mj.load_media(run, "curve", 0)
    assert img.ndim == 3 and img.shape[2] in (3, 4) and img.shape[0] > 20
    assert mj.media(run)["mime"].to_list() == ["image/png", "image/png"]


def test_altair_and_plotly_keep_their_spec():
    alt = pytest.importorskip("altair")
    chart = alt.Chart(pl.DataFrame({"a": [1, 2], "b": [3, 4]})).mark_line().encode(x="a", y="b")
    with mj.start_run("fig") as run:
        mj.log_figure("alt", chart, step=0)
        try:
            import plotly.graph_objects as go

            mj.log_figure("plotly", go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), step=0)
        except ImportError:
            go = None
    spec = mj.load_media(run, "alt", 0)
    assert (
        spec["mark"]["type"] == "line" if isinstance(spec["mark"], dict) else spec["mark"] == "line"
    )
    if go is not None:
        assert mj.load_media(run, "plotly", 0)["data"][0]["x"] == [1, 2]


def test_confusion_matrix_counts_and_table():
    y_true = ["cat", "dog", "dog", "bird", "cat", "dog"]
    y_pred = ["cat", "cat", "dog", "bird", "dog", "dog"]
    with mj.start_run("cm") as run:
        m = mj.confusion_matrix(y_true, y_pred, step=2)
    # labels sorted: bird, cat, dog
    assert m.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]
    frame = mj.load_media(run, "confusion_matrix", 2)
    assert frame.filter((pl.col("actual") == "dog") & (pl.col("predicted") == "dog"))[
        "count"
    ].to_list() == [2]
    assert frame["count"].sum() == len(y_true)
    sk = pytest.importorskip("sklearn.metrics")
    assert (m == sk.confusion_matrix(y_true, y_pred, labels=["bird", "cat", "dog"])).all()


def test_bad_input_raises_at_the_call_site():
    with pytest.raises(NoActiveRunError):
        mj.log_image("k", np.zeros((2, 2), np.uint8))
    with mj.start_run("bad"):
        with pytest.raises(InvalidInputError, match="key"):
            mj.log_image("", np.zeros((2, 2), np.uint8))
        with pytest.raises(InvalidInputError, match="img"):
            mj.log_image("k", [[1, 2]])
        with pytest.raises(InvalidInputError, match="img"):
            mj.log_image("k", np.zeros((2, 2, 2, 2), np.uint8))
        with pytest.raises(InvalidInputError, match="step"):
            mj.log_image("k", np.zeros((2, 2), np.uint8), step=-1)
        with pytest.raises(InvalidInputError, match="sample_rate"):
            mj.log_audio("a", np.zeros(4), 0)
        with pytest.raises(InvalidInputError, match="text"):
            mj.log_text("t", b"bytes")
        with pytest.raises(InvalidInputError, match="frame"):
            mj.log_table("t", [1, 2])
        with pytest.raises(InvalidInputError, match="fig"):
            mj.log_figure("f", object())
        with pytest.raises(InvalidInputError, match="y_true"):
            mj.confusion_matrix([1, 2], [1])


def test_undecodable_image_warns_once_and_logging_goes_on():
    with mj.start_run("warn") as run:
        with pytest.warns(RuntimeWarning, match="could not store media"):
            mj.log_image("bad", np.zeros((2, 2, 7), np.uint8), step=0)  # 7 channels
            mj.flush_media()
        mj.log_image("good", np.zeros((2, 2), np.uint8), step=0)
    assert mj.media(run)["key"].to_list() == ["good"]
    with pytest.raises(ArtifactNotFoundError):
        mj.load_media(run, "bad", 0)


def test_log_image_caller_cost_is_small():
    """The caller pays for a copy and a queue put, not for PNG encoding (figure: median of
    many calls; a loose bound here, the benchmark reports the real number)."""
    img = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with mj.start_run("cost"):
        times = []
        for i in range(50):
            t = time.perf_counter()
            mj.log_image("x", img, step=i)
            times.append(time.perf_counter() - t)
            if i % 10 == 9:
                mj.flush_media()
    t_encode = time.perf_counter()
    enc.encode_png(img)
    t_encode = time.perf_counter() - t_encode
    assert float(np.median(times)) < max(t_encode / 2, 200e-6)


def test_copy_false_reads_the_callers_array_and_never_reuses_it():
    a = np.full((4, 4, 3), 7, np.uint8)
    with mj.start_run("nocopy") as run:
        mj.log_image("own", a, step=0, copy=False)
        mj.flush_media()
        for i in range(3):  # copies made afterwards must not land in the caller's array
            mj.log_image("copied", np.full((4, 4, 3), 100 + i, np.uint8), step=i)
        mj.flush_media()
    assert (a == 7).all()
    np.testing.assert_array_equal(mj.load_media(run, "own", 0), a)
    for i in range(3):
        assert (mj.load_media(run, "copied", i) == 100 + i).all()


def test_run_without_media_lists_an_empty_frame():
    with mj.start_run("empty") as run:
        mj.log(step=0, loss=1.0)
    f = mj.media(run)
    assert f.height == 0 and f.columns[:5] == ["key", "step", "kind", "mime", "digest"]
    with pytest.raises(ArtifactNotFoundError):
        mj.load_media(run, "nothing")
