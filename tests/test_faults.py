"""Faults with real processes: SIGKILL mid-logging, dead processes, concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import mlops_jupyter as mj

FLUSH = 0.2

KILLED_CHILD = textwrap.dedent(
    """
    import sys, time
    import mlops_jupyter as mj
    run = mj.start_run("victim")
    print("RUN", run.id, flush=True)
    i = 0
    while True:
        for _ in range(50):
            mj.log_metric("x", float(i), step=i)
            i += 1
        # report the last step logged and when, so the test knows what must be stored
        print(i - 1, time.time(), flush=True)
        time.sleep(0.002)
    """
)


@pytest.mark.slow
def test_sigkill_loses_at_most_one_flush_interval(child_env):
    env = dict(child_env, MLOPS_JUPYTER_FLUSH_INTERVAL=str(FLUSH))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD], stdout=subprocess.PIPE, text=True, env=env
    )
    reports: list[tuple[int, float]] = []
    run_id = proc.stdout.readline().split()[1]

    def read():
        for line in proc.stdout:
            step, t = line.split()
            reports.append((int(step), float(t)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(1.5)
    t_kill = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader.join(5)
    must_have = max(s for s, t in reports if t < t_kill - FLUSH)
    assert must_have > 1000  # the child really was logging
    steps = mj.metrics(run_id, "x")["step"].to_list()
    assert steps[: must_have + 1] == list(range(must_have + 1))
    assert mj.runs().filter(id=run_id)["status"].item() == "crashed"


def test_process_that_dies_without_cleanup_reads_crashed(child_env):
    code = (
        "import os, mlops_jupyter as mj; r = mj.start_run('ghost'); mj.log_metric('a', 1.0); "
        "mj.flush(); print(r.id, flush=True); os._exit(3)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=60
    )
    run_id = out.stdout.strip()
    df = mj.runs()
    row = df.filter(id=run_id).row(0, named=True)
    assert row["status"] == "crashed"
    assert row["metrics.a.last"] == 1.0
    assert row["end_time"] is not None


def test_script_exit_with_open_run(child_env):
    ok = "import mlops_jupyter as mj; mj.start_run('forgot-to-end'); mj.log(x=1.0)"
    bad = (
        "import mlops_jupyter as mj; mj.start_run('raised'); mj.log(x=1.0); raise SystemError('x')"
    )
    subprocess.run([sys.executable, "-c", ok], env=child_env, check=True, timeout=60)
    r = subprocess.run([sys.executable, "-c", bad], env=child_env, timeout=60, capture_output=True)
    assert r.returncode != 0
    status = dict(mj.runs().select("name", "status").iter_rows())
    assert status == {"forgot-to-end": "finished", "raised": "failed"}
    assert mj.metrics().height == 2


def test_live_run_of_this_process_is_not_crashed():
    with mj.start_run() as run:
        mj.log_metric("x", 1.0)
        assert mj.runs()["status"].to_list() == ["running"]
        assert run.status == "running"


WRITER = textwrap.dedent(
    """
    import sys, mlops_jupyter as mj
    n = int(sys.argv[1])
    with mj.start_run(f"writer-{sys.argv[2]}", experiment="parallel") as run:
        log = mj.log_metric
        for i in range(n):
            log("loss", i * 0.5, step=i)
            if i % 10000 == 0:
                mj.log_params({f"p{i}": i})  # synchronous writes interleaved with the writer's
    print(run.id)
    """
)


@pytest.mark.slow
def test_four_processes_write_at_once(child_env):
    n = 100_000
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(n), str(k)],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "locked" not in err.lower() and "warning" not in err.lower(), err
    df = mj.runs(experiment="parallel")
    assert df.height == 4 and set(df["status"]) == {"finished"}
    m = mj.metrics(df)
    assert m.height == 4 * n
    for rid in df["id"]:
        steps = m.filter(run_id=rid)["step"]
        assert steps.len() == n and steps.n_unique() == n


def test_concurrent_threads_in_one_process():
    with mj.start_run() as run:

        def work(k):
            for i in range(5000):
                mj.log_metric(f"t{k}", float(i), step=i)

        ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    m = mj.metrics(run.id)
    assert m.height == 20_000
    assert m.group_by("key").len()["len"].to_list() == [5000] * 4


def test_reader_in_another_process_sees_points_while_running(child_env):
    with mj.start_run() as run:
        for i in range(10):
            mj.log_metric("x", float(i))
        time.sleep(3 * FLUSH + 0.2)  # the background writer commits without any flush call
        code = f"import mlops_jupyter as mj; print(mj.metrics('{run.id}').height)"
        out = subprocess.run(
            [sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=60
        )
        assert out.stdout.strip() == "10", out.stderr
    assert os.environ.get("MLOPS_JUPYTER_STORE")
