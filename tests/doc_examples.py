"""Collect the code examples of README.md and docs/*.md and run them as a user would.

A document's runnable blocks are

- every ```python block: run in one real IPython kernel per document, in order, so blocks
  build on each other like cells of one notebook (magics included);
- every shell block (```bash, ```sh, ```console or a bare fence) with a line that calls
  `mlops-jupyter` or `python -m ...`: run with bash in the same scratch folder, between the
  Python blocks around it;
- a bare fence whose first line is a `%` magic: run in the kernel like a Python block.

A block fails when it raises, exits non-zero, or prints a traceback (or, for a command, an
`error: ` line, which `|| ...` would otherwise hide).

An HTML comment just before a fence (blank lines between are allowed) controls it:

    <!-- doc-test: skip (why it cannot run here) -->      the reason is required
    <!-- doc-test: setup
    hidden Python run in the document's kernel right before the block
    -->
    <!-- doc-test: needs torch optuna -->       optional extras the block (or its setup) uses:
                                                 without them it and the rest of the document
                                                 (which may build on it) are not run
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PYTHON_LANGS = {"python", "py", "python3", "ipython"}
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*(?P<end>-->)?\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>[^)]*\S[^)]*)\)$")
_TRACEBACK = "Traceback (most recent call last)"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COMMAND = re.compile(r"^(?:mlops-jupyter\b|python3?\s+-m\s)")
# commands that change the machine: a block running them next to ours must be marked skip
_SETUP_COMMAND = re.compile(r"^(?:sudo|apt-get|apt|pip3?|make|npm|jlpm|yarn)\b")


class DocTestError(Exception):
    """A malformed doc-test directive."""


@dataclass
class Block:
    """One fenced block of a markdown document."""

    doc: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    kind: str  # "python", "shell" or "ignore"
    skip: str | None = None  # the reason, when marked skip
    setup: str | None = None  # hidden Python run before the block
    needs: tuple[str, ...] = ()  # modules (optional extras) the block imports

    def missing(self) -> list[str]:
        """The modules this block needs that are not installed."""
        return [m for m in self.needs if importlib.util.find_spec(m) is None]

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def _kind(lang: str, code: str) -> str:
    lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
    if lang in PYTHON_LANGS:
        return "python"
    if lang in SHELL_LANGS or lang == "":
        if any(_COMMAND.match(ln) for ln in lines):
            return "shell"
        if lang == "" and lines and lines[0].startswith("%"):
            return "python"
    return "ignore"


def parse_directive(body: str, where: str) -> tuple[str, str]:
    """('skip', reason), ('needs', modules) or ('setup', code) from the text after
    `doc-test:`."""
    head, _, rest = body.partition("\n")
    head = head.strip()
    if head.startswith("skip"):
        m = _SKIP.match(head)
        if not m or rest.strip():
            raise DocTestError(f"{where}: write `<!-- doc-test: skip (reason) -->` with a reason")
        return "skip", m.group("reason").strip()
    if head.startswith("needs"):
        mods = tuple(m for m in re.split(r"[\s,]+", head[len("needs") :]) if m)
        if not mods or rest.strip():
            raise DocTestError(f"{where}: write `<!-- doc-test: needs MODULE ... -->`")
        return "needs", " ".join(mods)
    if head == "setup":
        if not rest.strip():
            raise DocTestError(f"{where}: a doc-test setup comment has no code")
        return "setup", textwrap.dedent(rest)
    raise DocTestError(f"{where}: unknown doc-test directive {head!r} (use skip, needs or setup)")


def collect(path: Path, name: str | None = None) -> list[Block]:
    """Every fenced block of one markdown file, with its directives applied."""
    name = name or path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[tuple[str, str, str]] = []  # (kind, value, where)
    i = 0
    while i < len(lines):
        line = lines[i]
        d = _DIRECTIVE.match(line)
        if d:
            where = f"{name}:{i + 1}"
            body = d.group("body")
            if not d.group("end"):  # multi-line comment: read up to `-->`
                parts = [body]
                i += 1
                while i < len(lines) and "-->" not in lines[i]:
                    parts.append(lines[i])
                    i += 1
                if i == len(lines):
                    raise DocTestError(f"{where}: doc-test comment is never closed")
                parts.append(lines[i].split("-->")[0])
                body = "\n".join(parts)
            pending.append((*parse_directive(body, where), where))
            i += 1
            continue
        m = _FENCE.match(line)
        if m:
            indent, fence = m.group("indent"), m.group("fence")
            lang = m.group("info").strip().split(" ")[0].lower()
            start = i
            body_lines = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body_lines.append(
                    lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i]
                )
                i += 1
            code = "\n".join(body_lines) + "\n"
            block = Block(name, start + 1, lang, code, _kind(lang, code))
            if block.kind == "shell" and not any(k == "skip" for k, _, _ in pending):
                for ln in code.splitlines():
                    if _SETUP_COMMAND.match(ln.strip()):
                        raise DocTestError(
                            f"{block.where}: {ln.strip()!r} would change this machine;"
                            " move it to another block or mark this one skip"
                        )
            for kind, value, _where in pending:
                if kind == "skip":
                    block.skip = value
                elif kind == "needs":
                    block.needs += tuple(value.split())
                else:
                    block.setup = (block.setup or "") + value
            pending = []
            blocks.append(block)
            i += 1
            continue
        if pending and line.strip():
            raise DocTestError(f"{pending[0][2]}: a doc-test comment must come just before a fence")
        i += 1
    if pending:
        raise DocTestError(f"{pending[0][2]}: a doc-test comment with no fence after it")
    return blocks


def documents() -> list[Path]:
    """README.md and every docs/*.md of this checkout."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_env(store: Path) -> dict[str, str]:
    """The environment a user's shell would have: this interpreter's bin first on PATH."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env["MLOPS_JUPYTER_STORE"] = str(store)
    pp = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), pp]).rstrip(os.pathsep)
    return env


def run_shell(block: Block, cwd: Path, store: Path, timeout: float = 120) -> str:
    """Run a shell block with bash -e; raise AssertionError with its output if it fails."""
    proc = subprocess.run(
        ["bash", "-e", "-c", block.code],
        cwd=cwd,
        env=shell_env(store),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(
            f"{block.where}: shell block exited with {proc.returncode}\n{block.code}\n{out}"
        )
    if _TRACEBACK in out or re.search(r"^error: ", out, re.M):  # a crash hidden by `|| ...`
        raise AssertionError(f"{block.where}: shell block printed an error\n{block.code}\n{out}")
    return out


class DocSession:
    """One document's scratch folder and kernel: Python blocks run as cells of one notebook,
    shell blocks in between with bash, all against the same scratch store."""

    def __init__(self, cwd: Path, store: Path, timeout: int = 180):
        import nbformat
        from nbclient import NotebookClient

        self.cwd, self.store = cwd, store
        self.nb = nbformat.v4.new_notebook()
        self.nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        self._new_cell = nbformat.v4.new_code_cell
        self.client = NotebookClient(
            self.nb,
            kernel_name="python3",
            timeout=timeout,
            allow_errors=False,
            resources={"metadata": {"path": str(cwd)}},
        )
        self._kernel = None

    def __enter__(self) -> DocSession:
        saved = dict(os.environ)
        os.environ.update(shell_env(self.store))  # the kernel inherits this environment
        try:
            self._kernel = self.client.setup_kernel()
            self._kernel.__enter__()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return self

    def __exit__(self, *exc) -> None:
        if self._kernel is not None:
            self._kernel.__exit__(*exc)

    def run_python(self, code: str, where: str) -> list:
        """Execute `code` as the next cell; raise AssertionError naming `where` on error."""
        from nbclient.exceptions import CellExecutionError

        cell = self._new_cell(code)
        self.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        except CellExecutionError as e:
            # nbclient's message repeats the cell; keep the traceback, without colours
            tb = _ANSI.sub("", str(e)).split("------------------")[-1].strip()
            why = f"{e.ename}: {e.evalue}"
            raise AssertionError(f"{where}: block failed\n{code}\n{tb}\n{why}") from None
        # a traceback printed from a background thread or a caught error still means broken
        for out in cell.outputs:
            if out.get("name") == "stderr" and _TRACEBACK in out.get("text", ""):
                raise AssertionError(f"{where}: block printed a traceback\n{code}\n{out['text']}")
        return cell.outputs

    def run(self, block: Block) -> None:
        """Run one collected block (setup first); skipped and ignored blocks do nothing."""
        if block.skip is not None or block.kind == "ignore":
            return
        if block.setup:
            self.run_python(block.setup, f"{block.where} (setup)")
        if block.kind == "python":
            self.run_python(block.code, block.where)
        else:
            run_shell(block, self.cwd, self.store)
