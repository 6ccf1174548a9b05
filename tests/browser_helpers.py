"""Shared helpers for tests that drive a real `jupyter lab` in real headless Chromium.

Import them from any test file (tests/ is on sys.path because it has no __init__.py and
pytest's default "prepend" import mode inserts the test file's folder):

    from browser_helpers import (
        LabServer, start_lab, stop_lab, launch_chromium, open_notebook,
        wait_kernel_idle, run_cell, screenshot, make_notebook, lab_server, browser, page,
    )

Plain functions
---------------
start_lab(root_dir, store_path=None, env=None, timeout=120) -> LabServer
    Start `jupyter lab` on 127.0.0.1 at a free port with a random token, a fresh
    JUPYTER_CONFIG_DIR / JUPYTERLAB_WORKSPACES_DIR / JUPYTER_RUNTIME_DIR / JUPYTERLAB_SETTINGS_DIR
    (under a temp dir; the news toast is switched off),
    serving `root_dir`, with MLOPS_JUPYTER_STORE=store_path when given. Blocks until
    /api/status answers. Server output goes to test-artifacts/lab-<port>.log.
    LabServer fields: url ("http://127.0.0.1:P/"), port, token, root_dir, proc, log_path;
    LabServer.lab_url(path="") -> url with token for the browser ("lab/tree/<path>");
    LabServer.api(path, method="GET", body=None) -> (status, parsed JSON or text).
stop_lab(server): terminate the server by its PID (kill after 10 s).
launch_chromium(playwright) -> Browser: /usr/bin/chromium (or $CHROMIUM), headless, with the
    flags that work on these machines. Skips the test if no chromium is found.
make_notebook(path, sources): write a .ipynb with one code cell per source string.
open_notebook(page, server, relpath, timeout=60_000): go to the notebook in JupyterLab and
    wait until the kernel is attached and idle.
wait_kernel_idle(page, timeout=60_000): wait for the status bar to read "| Idle".
run_cell(page, index, timeout=60_000): click cell `index` (0-based), press Shift+Enter and
    wait for its execution count prompt "[n]:" to appear.
run_all(page, timeout=120_000): run every cell in order (Shift+Enter each), wait until idle.
screenshot(page, name) -> Path: save test-artifacts/<name>.png (repo root, gitignored).
artifacts_dir() -> Path: test-artifacts/ (created).

Pytest fixtures
---------------
lab_server(tmp_path, monkeypatch): a started LabServer with root tmp_path/"root" and store
    tmp_path/"store.db" (also set as MLOPS_JUPYTER_STORE in this process); stopped after.
browser: a module-scoped Chromium (one per test module, closed after).
page(browser): a fresh page (context) per test, 1400x900, JS console errors collected on
    `page.console_errors`; closed after the test.
To use the fixtures, bind them in the test module (a plain import of a fixture that is
then used as a parameter trips ruff's F811):
    import browser_helpers as bh
    browser, page, lab_server = bh.browser, bh.page, bh.lab_server
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def artifacts_dir() -> Path:
    """test-artifacts/ at the repository root (gitignored), created on demand."""
    d = REPO_ROOT / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running `jupyter lab` subprocess."""

    url: str
    port: int
    token: str
    root_dir: Path
    proc: subprocess.Popen
    log_path: Path
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def lab_url(self, path: str = "") -> str:
        """URL of a JupyterLab page (e.g. "lab/tree/x.ipynb") with the token."""
        path = path or "lab"
        return f"{self.url}{path}?token={self.token}"

    def api(self, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        """Call the server with the token; return (status, JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path.lstrip("/"),
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")


def _jupyter_bin() -> str:
    exe = Path(sys.executable).parent / "jupyter"
    return str(exe) if exe.exists() else (shutil.which("jupyter") or "jupyter")


def start_lab(
    root_dir: str | os.PathLike,
    store_path: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> LabServer:
    """Start `jupyter lab` on loopback with a token and fresh config dirs; wait for it."""
    root = Path(root_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="mj-lab-"))
    port, token = _free_port(), uuid.uuid4().hex
    e = dict(os.environ)
    e.update(
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        PYTHONUNBUFFERED="1",
    )
    # The kernel must import the package under test even when it is not installed.
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), e.get("PYTHONPATH")) if p)
    if store_path is not None:
        e["MLOPS_JUPYTER_STORE"] = str(store_path)
    if env:
        e.update(env)
    # no "get notified about Jupyter news?" toast over the screenshots
    notif = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True)
    (notif / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log_path = artifacts_dir() / f"lab-{port}.log"
    cmd = [
        _jupyter_bin(),
        "lab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--allow-root",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=e, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = LabServer(f"http://127.0.0.1:{port}/", port, token, root, proc, log_path, tmp)
    server.extra["log"] = log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"jupyter lab exited ({proc.returncode}); see {log_path}")
        try:
            status, _ = server.api("api/status")
            if status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.3)
    stop_lab(server)
    raise RuntimeError(f"jupyter lab did not answer within {timeout}s; see {log_path}")


@contextmanager
def running_lab(
    root_dir: str | os.PathLike,
    store_path: str | os.PathLike,
    env: dict[str, str] | None = None,
    **extra: Any,
) -> Iterator[LabServer]:
    """start_lab on `store_path` (kept in server.extra["store"], with `extra`); stopped on exit."""
    server = start_lab(root_dir, store_path=store_path, env=env)
    server.extra.update(store=store_path, **extra)
    try:
        yield server
    finally:
        stop_lab(server)


def stop_lab(server: LabServer) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its temp dirs."""
    p = server.proc
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    log = server.extra.get("log")
    if log:
        log.close()
    shutil.rmtree(server.tmp, ignore_errors=True)


def launch_chromium(playwright):
    """Launch headless Debian Chromium through Playwright (never a downloaded browser)."""
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.skip("chromium not installed (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)


def make_notebook(path: str | os.PathLike, sources: list[str]) -> Path:
    """Write a notebook with one code cell per source string."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, p)
    return p


def wait_kernel_idle(page, timeout: float = 60_000) -> None:
    """Wait for the status bar kernel item to read "| Idle" (a kernel is attached and idle)."""
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem, '
             + '.jp-StatusBar-Item span')).some(e => /\\|\\s*Idle/.test(e.textContent || ''))""",
        timeout=timeout,
    )


def open_notebook(page, server: LabServer, relpath: str, timeout: float = 60_000) -> None:
    """Open a notebook (path relative to the server root) and wait for an idle kernel."""
    page.goto(server.lab_url(f"lab/tree/{relpath}"), timeout=timeout)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout)
    wait_kernel_idle(page, timeout)


_CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"


def run_cell(page, index: int, timeout: float = 60_000) -> None:
    """Run cell `index` (0-based) with Shift+Enter and wait for its "[n]:" prompt."""
    cell = page.locator(_CELLS).nth(index)
    prompt = cell.locator(".jp-InputArea-prompt")
    before = prompt.text_content() or ""
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    # A re-run cell already shows a count: wait for a *new* one.
    page.wait_for_function(
        """([el, before]) => {
            const t = el.textContent || '';
            return /\\[\\d+\\]/.test(t) && t !== before;
        }""",
        arg=[prompt.element_handle(), before],
        timeout=timeout,
    )


def run_all(page, timeout: float = 120_000) -> None:
    """Run every cell of the current notebook in order, then wait until the kernel is idle."""
    n = page.locator(_CELLS).count()
    for i in range(n):
        run_cell(page, i, timeout)
    wait_kernel_idle(page, timeout)


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot to test-artifacts/<name>.png and return its path."""
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def lab_server(tmp_path, monkeypatch):
    """A real `jupyter lab` serving tmp_path/"root" with store tmp_path/"store.db"."""
    store = tmp_path / "store.db"
    monkeypatch.setenv("MLOPS_JUPYTER_STORE", str(store))
    with running_lab(tmp_path / "root", store) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = launch_chromium(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context + page per test; console errors on `page.console_errors`."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors
    try:
        yield pg
    finally:
        ctx.close()


def run_command(page: Any, label: str) -> None:
    """Run a lab command by its palette label. On a loaded machine the first key press can
    come before the lab has bound its shortcuts: press again until the palette shows
    (bounded; a press while it is open would close it, so look first)."""
    box = page.locator(".lm-CommandPalette-input")
    for _ in range(12):
        if box.is_visible():
            break
        page.keyboard.press("Control+Shift+c")
        try:
            box.wait_for(state="visible", timeout=5_000)
            break
        except Exception:  # playwright's TimeoutError: not bound yet
            continue
    box.fill(label)
    page.keyboard.press("Enter")
