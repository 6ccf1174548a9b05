"""Progress display of a pipeline run, on stderr: one line per stage, and on a terminal a
ticking elapsed time for the stage that is running."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """`[2/4] train      running 3.1s` -> `[2/4] train      done in 4.2s`."""

    def __init__(self, total: int, width: int, stream: TextIO | None = None, quiet: bool = False):
        self.total = total
        self.width = max(width, 5)
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = bool(getattr(self.stream, "isatty", lambda: False)()) and not quiet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream must not fail the pipeline
            pass

    def header(self, text: str) -> None:
        self._write(text + "\n")

    def _label(self, i: int, name: str) -> str:
        # `[ 9/12]` and `[10/12]`: the counter has one width, so the stage names line up
        return f"[{i:>{len(str(self.total))}}/{self.total}] {name.ljust(self.width)}"

    def start(self, i: int, name: str) -> None:
        label = self._label(i, name)
        if not self.live:
            self._write(f"{label} running\n")
            return
        t0 = time.perf_counter()
        self._stop.clear()

        def tick() -> None:
            while not self._stop.wait(0.5):
                self._write(f"\r{label} running {time.perf_counter() - t0:.1f}s")

        self._write(f"{label} running")
        self._thread = threading.Thread(target=tick, daemon=True, name="mlops-progress")
        self._thread.start()

    def _end_live(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._write("\r\x1b[2K")

    def done(self, i: int, name: str, seconds: float, outputs: list[str]) -> None:
        self._end_live()
        out = f"  -> {', '.join(outputs)}" if outputs else ""
        self._write(f"{self._label(i, name)} done in {seconds:.2f}s{out}\n")

    def cached(self, i: int, name: str) -> None:
        self._write(f"{self._label(i, name)} cached\n")

    def failed(self, i: int, name: str, seconds: float) -> None:
        self._end_live()
        self._write(f"{self._label(i, name)} FAILED after {seconds:.2f}s\n")
