"""Progress display of a pipeline run: one line per stage on stderr, and where someone can
see it (a terminal or a notebook) a tqdm bar over the stages below those lines, its elapsed
time ticking while a stage runs (see mlops_jupyter.progress)."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from ..progress import progress, visible


class Progress:
    """Lines `[2/4] train      done in 4.2s`, plus a bar `[3/4] evaluate |##   | 2/4`."""

    def __init__(self, total: int, width: int, stream: TextIO | None = None, quiet: bool = False):
        self.total = total
        self.width = max(width, 5)
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = visible(quiet, self.stream)
        self._bar = None
        if self.live:
            self._bar = progress(
                total=total, desc="pipeline", unit="stage", delay=0, file=self.stream
            )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        try:
            if self._bar is not None:
                # above the bar: tqdm clears it, prints the line and draws it again
                self._bar.write(text.rstrip("\n"), file=self.stream)
            else:
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
        if self._bar is None:
            self._write(f"{label} running\n")
            return
        self._bar.set_description_str(f"{label} running", refresh=True)
        self._stop.clear()
        bar = self._bar

        def tick() -> None:
            # tqdm redraws on update only; a long stage still shows its elapsed time
            while not self._stop.wait(0.5):
                try:
                    bar.refresh()
                except (OSError, ValueError):
                    return

        self._thread = threading.Thread(target=tick, daemon=True, name="mlops-progress")
        self._thread.start()

    def _stop_tick(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _step(self) -> None:
        if self._bar is not None:
            try:
                self._bar.set_description_str("pipeline", refresh=False)
                self._bar.update()
                if self._bar.n >= self.total:
                    self.close()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Remove the bar (the stage lines stay)."""
        self._stop_tick()
        if self._bar is not None:
            bar, self._bar = self._bar, None
            try:
                bar.close()
            except (OSError, ValueError):
                pass

    def done(self, i: int, name: str, seconds: float, outputs: list[str]) -> None:
        self._stop_tick()
        out = f"  -> {', '.join(outputs)}" if outputs else ""
        self._write(f"{self._label(i, name)} done in {seconds:.2f}s{out}\n")
        self._step()

    def cached(self, i: int, name: str) -> None:
        self._write(f"{self._label(i, name)} cached\n")
        self._step()

    def failed(self, i: int, name: str, seconds: float) -> None:
        self._stop_tick()
        self._write(f"{self._label(i, name)} FAILED after {seconds:.2f}s\n")
        self.close()
