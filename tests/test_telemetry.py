"""Telemetry: sources (real psutil, torch CPU, MLX CPU; NVML conversions with synthetic
readings), thermal state, throttle episodes, the background sampler on a real store,
snapshot/devices/should_run."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import namedtuple

import pytest

import mlops_jupyter as mj
from mlops_jupyter.errors import InvalidInputError
from mlops_jupyter.telemetry import decide, sampler, sources
from mlops_jupyter.telemetry.throttle import Episodes, ThrottleDetector

Temp = namedtuple("Temp", "label current high critical")
CpuT = namedtuple("CpuT", "user nice system idle iowait")


@pytest.fixture
def telemetry_on(monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "1")
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY_INTERVAL", "0.05")
    # the sampling thread normally waits 30 s for the next run; the tests want it gone sooner
    monkeypatch.setattr(sampler, "IDLE_KEEP_S", 0.2)


def _wait_hub_idle(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while sampler.hub().thread is not None and time.monotonic() < deadline:
        time.sleep(0.02)


# -- pure conversions ---------------------------------------------------------------------
def test_cpu_percents_from_cpu_times():
    prev = [CpuT(10, 0, 10, 80, 0), CpuT(0, 0, 0, 100, 0)]
    cur = [CpuT(40, 0, 20, 140, 0), CpuT(0, 0, 0, 200, 0)]  # core0: 40 busy of 100
    assert sources.cpu_percents(prev, cur) == [40.0, 0.0]
    assert sources.cpu_percents(prev, prev) == [0.0, 0.0]  # no time passed


def test_temperature_metrics_prefers_cpu_chips_and_keeps_limits():
    temps = {
        "coretemp": [Temp("Package id 0", 71.0, 84.0, 100.0), Temp("Core 0", 69.0, 84.0, 100.0)],
        "nvme": [Temp("Composite", 45.0, None, None)],
        "acpitz": [Temp("", 0.0, None, None)],  # bogus reading: ignored
    }
    out, limits = sources.temperature_metrics(temps)
    assert out["sys/cpu/temp_c"] == 71.0
    assert out["sys/temp/coretemp_c"] == 71.0 and out["sys/temp/nvme_c"] == 45.0
    assert "sys/temp/acpitz_c" not in out
    assert limits == {"cpu_high": 84.0, "cpu_critical": 100.0}
    # no CPU chip: the hottest sensor stands in
    out, _ = sources.temperature_metrics({"nvme": [Temp("", 50.0, None, None)]})
    assert out["sys/cpu/temp_c"] == 50.0


def test_read_thermal_zones_from_a_sysfs_tree(tmp_path):
    for i, (kind, milli) in enumerate([("x86_pkg_temp", 64000), ("acpitz", 27800)]):
        z = tmp_path / f"thermal_zone{i}"
        z.mkdir()
        (z / "temp").write_text(f"{milli}\n")
        (z / "type").write_text(kind + "\n")
        (z / "trip_point_0_type").write_text("critical\n")
        (z / "trip_point_0_temp").write_text("105000\n")
    (tmp_path / "cooling_device0").mkdir()
    zones = sources.read_thermal_zones(tmp_path)
    assert zones["cpu_thermal"][0].current == 64.0
    assert zones["cpu_thermal"][0].critical == 105.0
    out, limits = sources.temperature_metrics(zones)
    assert out["sys/cpu/temp_c"] == 64.0 and limits["cpu_critical"] == 105.0
    assert sources.read_thermal_zones(tmp_path / "missing") == {}


def test_gpu_metrics_and_throttle_reasons():
    readings = [
        {
            "index": 0,
            "util": 97,
            "mem_used": 30 * 2**30,
            "mem_total": 80 * 2**30,
            "temp": 86,
            "power_mw": 412_000,
            "sm_clock": 1410,
            "throttle_reasons": sources.NVML_HW_THERMAL,
        },
        {"index": 1, "util": None, "mem_used": None, "temp": 40, "throttle_reasons": 0x4},
    ]
    m = sources.gpu_metrics(readings)
    assert m["sys/gpu0/util_percent"] == 97 and m["sys/gpu0/mem_used_gib"] == 30
    assert m["sys/gpu0/mem_percent"] == 37.5 and m["sys/gpu0/power_w"] == 412
    assert m["sys/gpu0/throttle_thermal"] == 1 and m["sys/gpu0/throttle_power"] == 0
    assert m["sys/gpu1/throttle_power"] == 1 and "sys/gpu1/util_percent" not in m
    # a throttling GPU makes the derived thermal state at least "serious"
    assert sources.derive_thermal_state(m) == 2


def test_derive_thermal_state_levels():
    assert sources.derive_thermal_state({}) is None
    assert sources.derive_thermal_state({"sys/cpu/temp_c": 55}) == 0
    assert sources.derive_thermal_state({"sys/cpu/temp_c": 82}) == 1
    lim = {"cpu_high": 84.0, "cpu_critical": 100.0}
    assert sources.derive_thermal_state({"sys/cpu/temp_c": 85}, lim) == 2
    assert sources.derive_thermal_state({"sys/cpu/temp_c": 101}, lim) == 3
    assert sources.derive_thermal_state({"sys/gpu0/temp_c": 96}) == 3


# -- real sources -------------------------------------------------------------------------
def test_psutil_source_reads_this_machine(tmp_path):
    src = sources.Sources(tmp_path)
    busy_until = time.monotonic() + 0.15
    while time.monotonic() < busy_until:
        pass  # a little load so CPU % has something to measure
    s = src.sample()
    import psutil

    n = psutil.cpu_count()
    assert 0 <= s["sys/cpu/percent"] <= 100
    assert all(f"sys/cpu/core{i}/percent" in s for i in range(n))
    assert s["sys/proc/cpu_percent"] > 0
    assert 0 < s["sys/mem/percent"] < 100 and s["sys/mem/available_gib"] > 0
    assert s["sys/proc/rss_gib"] > 0.001
    for k in ("disk/read_mbps", "disk/write_mbps", "net/recv_mbps", "net/sent_mbps"):
        if f"sys/{k}" in s:
            assert s[f"sys/{k}"] >= 0
    assert 0 < s["sys/disk/free_percent"] <= 100
    assert all(isinstance(v, float) for v in s.values())
    assert src.failed == {}


def test_a_failing_source_does_not_stop_the_others(monkeypatch, tmp_path):
    import psutil

    def broken():
        raise OSError("sensor bus error")

    monkeypatch.setattr(psutil, "sensors_temperatures", broken, raising=False)
    src = sources.Sources(tmp_path)
    s = src.sample()
    assert "temperatures" in src.failed and "sensor bus error" in src.failed["temperatures"]
    assert "sys/cpu/percent" in s and "sys/mem/percent" in s


def test_torch_cpu_source_never_touches_cuda():
    torch = pytest.importorskip("torch")
    assert "torch" in sys.modules
    m = sources.torch_metrics()
    assert not torch.cuda.is_initialized()  # reading must not create a CUDA context
    if not torch.cuda.is_available():
        assert not any(k.startswith("sys/torch/cuda") for k in m)


def test_torch_cuda_readings_on_a_real_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    x = torch.ones((1024, 1024, 64), device="cuda")  # 256 MiB
    m = sources.torch_metrics()
    assert m["sys/torch/cuda0/allocated_gib"] >= 0.25
    assert m["sys/torch/cuda0/reserved_gib"] >= m["sys/torch/cuda0/allocated_gib"]
    del x


def test_nvml_on_a_real_gpu():
    nv = sources.nvml()
    if nv is None:
        pytest.skip("nvidia-ml-py or an NVIDIA GPU is not available here")
    m = sources.gpu_metrics(sources.read_nvml(nv))
    assert 0 <= m["sys/gpu0/util_percent"] <= 100
    assert 0 < m["sys/gpu0/temp_c"] < 120 and m["sys/gpu0/power_w"] > 0
    assert m["sys/gpu0/throttle_thermal"] in (0.0, 1.0)
    assert any(d["kind"] == "gpu" for d in mj.telemetry.devices())


def test_mlx_cpu_source_reports_memory():
    mx = pytest.importorskip("mlx.core")
    a = mx.ones((512, 512))
    mx.eval(a)
    m = sources.mlx_metrics()
    assert m["sys/mlx/active_gib"] > 0 and m["sys/mlx/peak_gib"] >= m["sys/mlx/active_gib"]
    assert any(d["kind"] == "mlx" for d in mj.telemetry.devices())


def test_telemetry_does_not_import_torch_or_mlx(tmp_path):
    code = (
        "import sys, time, mlops_jupyter as mj\n"
        "with mj.start_run('x'):\n"
        "    time.sleep(0.3)\n"
        "mj.telemetry.snapshot(); mj.telemetry.devices()\n"
        "assert 'torch' not in sys.modules and 'mlx' not in sys.modules, 'imported'\n"
        "assert 'IPython' not in sys.modules and 'anywidget' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {
        **__import__("os").environ,
        "MLOPS_JUPYTER_STORE": str(tmp_path / "s.db"),
        "MLOPS_JUPYTER_TELEMETRY": "1",
        "MLOPS_JUPYTER_TELEMETRY_INTERVAL": "0.05",
    }
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


# -- throttle detection -------------------------------------------------------------------
def test_throttle_episodes_from_synthetic_samples():
    d = ThrottleDetector()
    base = {"sys/cpu/freq_mhz": 3000.0, "sys/cpu/percent": 90.0}
    assert d.update(base, 0.0) == ([], [])
    started, _ = d.update({**base, "sys/thermal_state": 2.0}, 1.0)
    assert [e.key for e in started] == ["thermal_state"] and started[0].start == 1.0
    started, _ = d.update({**base, "sys/thermal_state": 3.0}, 2.0)  # same episode, worse
    assert started == [] and d.episodes.open["thermal_state"].data["peak_state"] == 3
    _, ended = d.update(base, 3.0)
    assert [(e.key, e.start, e.end) for e in ended] == [("thermal_state", 1.0, 3.0)]
    # GPU throttle flags
    g = {**base, "sys/gpu0/throttle_power": 1.0, "sys/gpu0/temp_c": 70.0}
    started, _ = d.update(g, 4.0)
    assert started[0].key == "gpu0_power" and "GPU0 power throttling" in started[0].message
    # CPU frequency collapse needs load and two samples in a row
    low = {"sys/cpu/freq_mhz": 1200.0, "sys/cpu/percent": 95.0}
    started, ended = d.update(low, 5.0)
    assert started == [] and [e.key for e in ended] == ["gpu0_power"]
    started, _ = d.update(low, 6.0)
    assert [e.key for e in started] == ["cpu_freq"]
    _, ended = d.update({"sys/cpu/freq_mhz": 1200.0, "sys/cpu/percent": 5.0}, 7.0)
    assert [e.key for e in ended] == ["cpu_freq"]  # idle at low clock is not throttling


def test_episodes_close_all():
    eps = Episodes()
    eps.update({"a": ("A", {}), "b": ("B", {})}, 1.0)
    closed = eps.close_all(5.0)
    assert sorted(e.key for e in closed) == ["a", "b"] and all(e.end == 5.0 for e in closed)


def test_throttle_events_are_stored_with_start_and_end():
    hub = sampler.Hub()
    run = mj.start_run("hot")
    st = hub.add(run, thread=False)
    hub.process([st], {"sys/thermal_state": 2.0, "sys/cpu/percent": 10.0}, 100.0)
    hub.process([st], {"sys/thermal_state": 3.0}, 101.0)
    hub.process([st], {"sys/thermal_state": 0.0}, 102.0)
    hub.process([st], {"sys/gpu0/throttle_thermal": 1.0, "sys/gpu0/temp_c": 91.0}, 103.0)
    run.end()
    ev = [e for e in mj.get_run(run.id)["events"] if e["kind"] == "throttle"]
    assert [(e["start_time"], e["end_time"]) for e in ev][0] == (100.0, 102.0)
    assert ev[0]["message"] == "thermal state serious" and ev[0]["data"]["peak_state"] == 3
    assert ev[1]["data"]["cause"] == "gpu_thermal" and ev[1]["end_time"] is not None
    # the samples were logged as metrics of the run too
    df = mj.metrics(run.id, keys="sys/thermal_state")
    assert df["value"].to_list() == [2.0, 3.0, 0.0]


# -- the background sampler ---------------------------------------------------------------
def test_sampler_logs_sys_metrics_while_the_run_is_active(telemetry_on):
    with mj.start_run("sampled") as run:
        assert sampler.hub().thread is not None
        time.sleep(0.5)
    _wait_hub_idle()
    assert sampler.hub().thread is None  # stops when no run is active
    df = mj.metrics(run.id)
    keys = set(df["key"].to_list())
    assert {"sys/cpu/percent", "sys/mem/percent", "sys/proc/rss_gib"} <= keys
    n = df.filter(df["key"] == "sys/cpu/percent").height
    assert 3 <= n <= 20
    # the runs table leaves telemetry out unless asked
    assert not any("sys/" in c for c in mj.runs().columns)
    assert "metrics.sys/mem/percent.max" in mj.runs(include_system=True).columns


def test_nested_runs_are_sampled_by_one_thread(telemetry_on):
    with mj.start_run("parent") as p:
        with mj.start_run("child") as c:
            time.sleep(0.25)
            names = [t.name for t in threading.enumerate()]
            assert names.count("mlops-telemetry") == 1
        time.sleep(0.15)
    _wait_hub_idle()
    np_ = mj.metrics(p.id, keys="sys/cpu/percent").height
    nc = mj.metrics(c.id, keys="sys/cpu/percent").height
    assert nc >= 2 and np_ > nc


def test_sampler_disabled_by_env(monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY", "0")
    with mj.start_run("quiet") as run:
        mj.log(loss=1.0)
        time.sleep(0.1)
    assert set(mj.metrics(run.id)["key"].to_list()) == {"loss"}


def test_interval_setting(monkeypatch):
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY_INTERVAL", "2.5")
    assert sampler.interval() == 2.5
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY_INTERVAL", "0")
    assert sampler.interval() == sampler.MIN_INTERVAL
    monkeypatch.setenv("MLOPS_JUPYTER_TELEMETRY_INTERVAL", "fast")
    with pytest.warns(RuntimeWarning, match="not a number"):
        assert sampler.interval() == 1.0


# -- public helpers -----------------------------------------------------------------------
def test_snapshot_and_devices():
    s = mj.telemetry.snapshot()
    assert "sys/cpu/percent" in s and "sys/mem/percent" in s
    assert s["thermal_state"] in ("nominal", "fair", "serious", "critical", "unknown")
    assert mj.telemetry.thermal_state() in ("nominal", "fair", "serious", "critical", "unknown")
    devs = mj.telemetry.devices()
    assert devs[0]["kind"] == "cpu" and devs[0]["threads"] >= 1 and devs[0]["memory_gib"] > 0


def test_should_run_decisions():
    d = mj.telemetry.should_run()
    assert isinstance(d.ok, bool) and d.reason and bool(d) == d.ok
    assert decide("nominal", 50.0).ok
    assert not decide("serious", 50.0)
    assert "serious" in decide("serious", 50.0).reason
    assert decide("serious", 50.0, "high").ok
    assert not decide("critical", 50.0, "high")
    assert not decide("nominal", 20.0, "low") and decide("nominal", 20.0, "normal")
    assert "memory" in decide("nominal", 3.0, "high").reason
    assert decide("unknown", 50.0).ok and "unknown" in decide("unknown", 50.0).reason
    with pytest.raises(InvalidInputError, match="priority"):
        mj.telemetry.should_run("urgent")
