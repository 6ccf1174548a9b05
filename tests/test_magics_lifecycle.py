"""Honest run lifecycle in a real kernel: killed, restarted and interrupted kernels."""

from __future__ import annotations

import os
import signal
import time

import pytest
from capture_helpers import KERNEL, query, use_store
from jupyter_client import KernelManager

import mlops_jupyter as mj

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    use_store(monkeypatch, tmp_path)
    km = KernelManager(kernel_name=KERNEL)
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield km, kc
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=True)


def _exec(kc, code: str, timeout: float = 60) -> dict:
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None)
    return reply["content"]


def _status(store, name: str) -> str:
    (uid,) = query(store, "SELECT uid FROM runs WHERE name=?", (name,))[0]
    return mj.get_run(uid)["status"]  # a reader: reconciles dead owners first


def test_killed_kernel_leaves_run_crashed(kernel, tmp_path):
    km, kc = kernel
    store = tmp_path / "store.db"
    assert _exec(kc, "%load_ext mlops_jupyter")["status"] == "ok"
    assert _exec(kc, "%mlops_run start doomed --no-live")["status"] == "ok"
    assert _exec(kc, "import mlops_jupyter as mj; mj.log(loss=0.5); mj.flush()")["status"] == "ok"
    assert query(store, "SELECT status FROM runs WHERE name='doomed'") == [("running",)]
    os.kill(km.provisioner.pid, signal.SIGKILL)  # no exit handlers, no goodbye
    deadline = time.time() + 10
    while km.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert _status(store, "doomed") == "crashed"
    # what was recorded before the kill is kept
    assert query(store, "SELECT count(*) FROM cell_executions")[0][0] == 2


def test_restarted_kernel_leaves_run_crashed(kernel, tmp_path):
    km, kc = kernel
    store = tmp_path / "store.db"
    _exec(kc, "%load_ext mlops_jupyter")
    _exec(kc, "%mlops_run start restarted --no-live")
    km.restart_kernel(now=False)  # graceful: the old kernel runs its exit handlers
    kc.wait_for_ready(timeout=60)
    # crashed at once (by the exit handler), without waiting for a stale heartbeat
    assert query(store, "SELECT status FROM runs WHERE name='restarted'") == [("crashed",)]


def test_interrupted_cell_marks_run_killed(kernel, tmp_path):
    km, kc = kernel
    store = tmp_path / "store.db"
    _exec(kc, "%load_ext mlops_jupyter")
    marker = tmp_path / "training-started"
    msg_id = kc.execute(
        "%%mlops_run sleepy --no-live\nimport time, pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "for _ in range(600): time.sleep(0.1)",
        stop_on_error=False,  # so the kernel does not abort the follow-up request below
    )
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert query(store, "SELECT status FROM runs WHERE name='sleepy'") == [("killed",)]
    # the kernel is still usable and the next run works
    assert _exec(kc, "%%mlops_run after --no-live\nx = 1")["status"] == "ok"
    assert _status(store, "after") == "finished"
