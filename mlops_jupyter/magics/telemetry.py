"""Telemetry magics: `%mlops_telemetry` (live panel without a run) and `%mlops_compare`.
Also gives Run objects a rich HTML repr in the notebook. Logic lives in widgets/."""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..errors import InvalidInputError


@magics_class
class TelemetryMagics(Magics):
    @magic_arguments()
    @argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    @argument("--stop", action="store_true", help="stop the panels started in this kernel")
    @line_magic
    def mlops_telemetry(self, line: str = ""):
        """Show a live telemetry panel (CPU, memory, temperatures, GPUs, thermal state)
        without a run. It samples until closed or `%mlops_telemetry --stop`."""
        args = parse_argstring(self.mlops_telemetry, line)
        if args.stop:
            for p in _panels:
                p.stop()
            _panels.clear()
            return None
        if args.interval <= 0:
            raise InvalidInputError("--interval must be a positive number of seconds")
        from ..widgets import telemetry_panel

        _panels.append(telemetry_panel(interval=args.interval, display=True))
        return None

    @magic_arguments()
    @argument("runs", nargs="*", help="run ids or names (default: the last N runs)")
    @argument("--last", type=int, default=None, help="compare the N most recent runs")
    @argument("--metric", default=None, help="metric to chart (default: a loss, or the first)")
    @argument("--experiment", default=None, help="with --last: only runs of this experiment")
    @line_magic
    def mlops_compare(self, line: str = ""):
        """Compare runs: params and metric summaries (differing params highlighted) and an
        overlay chart of one metric."""
        import mlops_jupyter as mj

        args = parse_argstring(self.mlops_compare, line)
        refs: list[str] = list(args.runs)
        if args.last is not None and args.last < 1:
            raise InvalidInputError("--last must be a positive number of runs")
        if args.last or not refs:
            df = mj.runs(experiment=args.experiment)
            refs += [r for r in df["id"].head(args.last or 5).to_list() if r not in refs]
        if not refs:
            raise InvalidInputError("no runs to compare yet")
        from ..widgets import compare

        return compare(refs, metric=args.metric)


_panels: list = []


def _run_html(run) -> str | None:
    from ..widgets import run_html

    try:
        return run_html(run)
    except Exception:
        return None  # fall back to the plain repr


def register(ipython) -> None:
    """Register the telemetry magics and the Run HTML repr on `ipython`."""
    ipython.register_magics(TelemetryMagics(ipython))
    from ..tracking.run import Run

    ipython.display_formatter.formatters["text/html"].for_type(Run, _run_html)
