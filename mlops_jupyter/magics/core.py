"""%%mlops_run / %mlops_run start|end, %mlops_runs, %mlops_status and the cell hooks.

Thin: it parses arguments, reads what IPython knows about the executing cell, and hands
plain values to `mlops_jupyter.capture`. The cell hooks (hooks.py, CellHooks re-exported
here) do almost nothing while no run is active and never raise into the user's cell."""

from __future__ import annotations

import ast
import html
import warnings
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .. import capture
from ..capture import Session, cell_key, literal_params, resolve_notebook
from ..capture.locate import Locator
from ..errors import StoreError
from ..tracking import api as _api
from ..tracking.run import END_STATUSES, Run
from .hooks import CellHooks, _is_remote, _notebook_candidates, _seed_history


def _unquote(s: Any) -> Any:
    """IPython splits magic lines keeping the quotes of a quoted word (`"my run"`); the
    user meant the text inside them."""
    if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    return s


def _unquoted(args):
    """`args` with every string and list-of-strings value unquoted."""
    for k, v in vars(args).items():
        setattr(args, k, [_unquote(x) for x in v] if isinstance(v, list) else _unquote(v))
    return args


def _kv(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise UsageError(f"--{what} expects KEY=VALUE, got {item!r}")
        if "#" in v and v.strip()[:1] not in ("'", '"'):
            out[k.strip()] = v  # `ML#42`, `5#x`: text (literal_eval would drop a "comment")
            continue
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


@magics_class
class CaptureMagics(Magics):
    """Run tracking magics of mlops-jupyter."""

    def __init__(self, shell, hooks: CellHooks, nb_state: dict) -> None:
        super().__init__(shell)
        self.hooks = hooks
        self.session = hooks.session
        self.nb_state = nb_state

    # -- %%mlops_run / %mlops_run start|end ------------------------------------------------
    @magic_arguments()
    @argument(
        "words",
        nargs="*",
        metavar="NAME | start [NAME] | end",
        help="cell form: %%%%mlops_run [NAME]; line form: %%mlops_run start [NAME] / end",
    )
    @argument("-e", "--experiment", default="default", help="experiment name (default: default)")
    @argument(
        "-t", "--tag", action="append", default=[], metavar="KEY=VALUE", help="tag (repeatable)"
    )
    @argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra param (repeatable); wins over captured ones",
    )
    @argument("--no-live", action="store_true", help="don't show the live run monitor")
    @argument(
        "--no-params",
        action="store_true",
        help="don't turn literal assignments (and `parameters` cells) into params",
    )
    @argument("--notebook", metavar="PATH", help="this notebook's path, if the front end hides it")
    @argument(
        "--status",
        default="finished",
        choices=END_STATUSES,
        help="(`end` only) status to record, default finished",
    )
    @line_cell_magic
    def mlops_run(self, line: str, cell: str | None = None):
        """Track a notebook run.

        As a cell magic, `%%mlops_run [NAME]` runs the cell as one run: top-level literal
        assignments (`lr = 3e-4`) and earlier `parameters` cells become params, `mj.log()`
        inside the cell logs to it, an exception marks it failed, an interrupt killed.
        Re-executing the cell starts a new attempt linked to the previous run.

        As a line magic, `%mlops_run start [NAME]` starts a run spanning the next cells
        (each executed cell is recorded) and `%mlops_run end` ends it.
        """
        args = _unquoted(parse_argstring(self.mlops_run, line))
        if args.notebook:
            path = resolve_notebook(args.notebook)
            if path is None:
                raise UsageError(f"--notebook: no notebook file at {args.notebook!r}")
            self.nb_state["explicit"] = path
        if cell is not None:
            if len(args.words) > 1:
                raise UsageError("usage: %%mlops_run [NAME] [options]; quote a name with spaces")
            return self._run_cell(args, args.words[0] if args.words else None, cell)
        if not args.words or args.words[0] not in ("start", "end"):
            raise UsageError(
                "use `%%mlops_run [NAME]` (two %) to track a cell, or "
                "`%mlops_run start [NAME]` ... `%mlops_run end` to span several cells"
            )
        if args.words[0] == "end":
            if len(args.words) > 1:
                raise UsageError("usage: %mlops_run end [--status STATUS]")
            return self._end(args.status)
        if len(args.words) > 2:
            raise UsageError("usage: %mlops_run start [NAME] [options]")
        return self._start(args, args.words[1] if len(args.words) > 1 else None)

    def _begin(
        self, args, name: str | None, params: dict[str, Any], key: str, auto_params: bool = False
    ) -> Run:
        store = _store()
        prev = self.session.previous_run(key, store)
        params = {**params, **_kv(args.param, "param")}
        tags = _kv(args.tag, "tag")
        try:
            run = _api.start_run(name, args.experiment, params=params, tags=tags, _prev_run=prev)
        except StoreError as e:
            if not _is_remote_store(store):
                raise
            # the run's id comes from the server: without it there is no run to record into
            raise UsageError(
                f"mlops: the run did not start, nothing was run or recorded: {e}"
            ) from None
        self.hooks.started.append(run)
        try:
            self.session.remember_cell_run(key, run)
            self.session.track(run, auto_params=auto_params)
        except Exception as e:
            self.session.warn_once("recording the run's cell", e)
        except BaseException as e:  # interrupted while starting: the run did not happen
            run.end(_status_for(e))
            raise
        return run

    def _captured_params(self, args, source: str) -> dict[str, Any]:
        if args.no_params:
            return {}
        params = self.session.parameters()
        try:
            params.update(literal_params(self.shell.transform_cell(source)))
        except Exception as e:
            self.session.warn_once("reading params from the cell", e)
        return params

    def _run_cell(self, args, name: str | None, body: str):
        if _needs_outer_loop(self.shell, body):
            raise UsageError(
                "top-level `await` cannot run inside %%mlops_run in this kernel; put "
                "`%mlops_run start` before the cell and `%mlops_run end` after it"
            )
        cid, raw = self.hooks.cell
        key = cell_key(cid, raw or body)
        run = self._begin(args, name, self._captured_params(args, body), key)
        ip = self.shell
        outer = getattr(ip.displayhook, "exec_result", None)
        err: BaseException | None = None
        try:
            if not args.no_live:
                _show_live(run, self.session)
            try:
                res = ip.run_cell(body, store_history=False)
            finally:
                ip.displayhook.exec_result = outer
            err = res.error_before_exec or res.error_in_exec
        except BaseException as e:  # an interrupt outside the user's code
            err = e
            raise
        finally:
            run.end(_status_for(err))
        if err is not None and outer is not None and outer.error_in_exec is None:
            # run_cell already showed the traceback; mark the outer cell failed too, so the
            # front end shows an error and "run all" stops here, as without the magic
            outer.error_in_exec = err
        return None

    def _start(self, args, name: str | None):
        cid, raw = self.hooks.cell
        key = cell_key(cid, raw)
        old = self.session.active_from_cell(key)
        if old is not None:
            # re-executing the same `start` cell restarts: the old attempt was abandoned
            try:
                old.add_event("lifecycle", "superseded: its start cell was re-executed")
            except StoreError as e:
                # over a tracking server that is away (events are not spooled) or has no
                # events API: the status "killed" still says it
                self.session.warn_once("recording the superseded event", e)
            old.end("killed")
        params = {} if args.no_params else self.session.parameters()
        run = self._begin(args, name, params, key, auto_params=not args.no_params)
        if not args.no_live:
            _show_live(run, self.session)
        print(
            f"mlops: run {run.name!r} ({run.id}) started in experiment {run.experiment!r}; "
            "cells are recorded until `%mlops_run end`"
        )

    def _end(self, status: str):
        run = _api.active_run()
        if run is None:
            raise UsageError("no active run to end (start one with `%mlops_run start`)")
        run.end(status)
        print(f"mlops: run {run.name!r} ({run.id}) ended: {status}")

    # -- %mlops_runs -----------------------------------------------------------------------
    @magic_arguments()
    @argument("-e", "--experiment", help="only this experiment")
    @argument("-s", "--status", help="only runs with this status")
    @argument("-n", "--last", type=int, default=20, help="newest N runs (default 20, 0: all)")
    @argument("-a", "--all-columns", action="store_true", help="min/max and system columns too")
    @line_magic
    def mlops_runs(self, line: str):
        """Show the runs table (newest first): status, attempt, duration, params, metrics."""
        args = _unquoted(parse_argstring(self.mlops_runs, line))
        if args.last < 0:
            raise UsageError("--last must be >= 0")
        df = _api.runs(
            experiment=args.experiment, status=args.status, include_system=args.all_columns
        )
        if df.height == 0:
            filters = [
                f"{flag} {value}"
                for flag, value in (("--experiment", args.experiment), ("--status", args.status))
                if value is not None
            ]
            if filters:
                print(f"no run matches {' '.join(filters)}")
            else:
                print("no runs yet: wrap a cell in %%mlops_run to record one")
            return
        if args.last:
            df = df.head(args.last)
        if not args.all_columns:
            keep = ["id", "name", "experiment", "status", "attempt", "start_time", "duration_s"]
            keep += [c for c in df.columns if c.startswith("params.")]
            keep += [c for c in df.columns if c.startswith("metrics.") and c.endswith(".last")]
            df = df.select([c for c in keep if c in df.columns])
        display(df)

    # -- %mlops_status ---------------------------------------------------------------------
    @line_magic
    def mlops_status(self, line: str = ""):
        """Show the active run: id, experiment, attempt, params, recorded cells, warnings."""
        if line.strip():
            raise UsageError("%mlops_status takes no arguments")
        display(status_report(self.session), raw=True)


def status_report(session: Session) -> dict[str, str]:
    """text/plain + text/html description of the active run (or of its absence)."""
    from ..store import capture as cstore
    from ..store import query as q

    nb = session.notebook()
    run = _api.active_run()
    if run is None:
        text = "no active run (start one with %%mlops_run or %mlops_run start)"
        lines = [text, f"notebook: {nb or 'unknown'}"]
    else:
        _api.flush()
        if _is_remote(run):
            d = _api.get_run(run.id)  # through the server (GET /api/v1/runs/{id})
            cells = d.get("cells") or []
        else:
            d = q.run_detail(run.store, run.store_id)
            cells = cstore.cells_for_run(run.store, run.store_id)
        warns = [e for e in d["events"] if e["kind"] == capture.PROVENANCE]
        lines = [
            f"run {d['name']!r} ({d['id']}) - {d['status']}, attempt {d['attempt']}",
            f"experiment: {d['experiment']}",
            f"running for {d['duration_s']:.1f} s; {len(cells)} cell(s) recorded",
            f"notebook: {d['tags'].get('notebook.path', nb or 'unknown')}",
        ]
        if "git.commit" in d["tags"]:
            dirty = " (dirty)" if d["tags"].get("git.dirty") else ""
            lines.append(f"git: {str(d['tags']['git.commit'])[:12]}{dirty}")
        if d["params"]:
            lines.append("params: " + ", ".join(f"{k}={v!r}" for k, v in d["params"].items()))
        user = [m for m in d["metrics"] if not m["key"].startswith("sys/")]
        if len(user) < len(d["metrics"]):
            lines.append(f"system metrics: {len(d['metrics']) - len(user)} series")
        for m in user:
            lines.append(f"metric {m['key']}: last {m['last']:.6g} ({m['count']} points)")
        for w in warns:
            lines.append(f"{w['level']}: {w['message']}")
    body = "".join(f"<div>{html.escape(s)}</div>" for s in lines)
    return {"text/plain": "\n".join(lines), "text/html": f"<div class='mlops-status'>{body}</div>"}


def _needs_outer_loop(ip, body: str) -> bool:
    """A body with top-level await would need the event loop the kernel is already inside."""
    if "await" not in body and "async" not in body:
        return False
    try:
        import asyncio

        asyncio.get_running_loop()
    except RuntimeError:
        return False  # no loop running (terminal IPython): run_cell can start its own
    try:
        return bool(ip.should_run_async(body, transformed_cell=ip.transform_cell(body)))
    except Exception:
        return False


def _status_for(err: BaseException | None) -> str:
    if err is None:
        return "finished"
    return "killed" if isinstance(err, KeyboardInterrupt) else "failed"


def _show_live(run: Run, session: Session) -> None:
    try:
        from ..widgets import live
    except ImportError:
        return
    try:
        live(run)  # over a tracking server too: it reads through the server's read routes
    except Exception as e:
        warnings.warn(f"mlops-jupyter: live monitor unavailable: {e}", RuntimeWarning, stacklevel=3)


def _store() -> Any:
    """The current store, or the tracking server's handle when the store is http(s)://."""
    url = _api.remote_url()
    if url is not None:
        from ..remote.api import remote_store

        return remote_store(url)
    return _api.current_store()


def _is_remote_store(store: Any) -> bool:
    return type(store).__name__ == "RemoteStore"


class _State:
    def __init__(self, hooks: CellHooks, exit_status: str) -> None:
        self.hooks = hooks
        self.exit_status = exit_status


def register(ip) -> _State:
    """Register the magics and the cell hooks on `ip`; return what unregister() needs."""
    nb_state: dict[str, str] = {}
    session = Session(lambda: _notebook_candidates(ip, nb_state, headless))
    headless = Locator(lambda: session.history, lambda: ip.user_ns)
    try:
        _seed_history(ip, session)
    except Exception as e:
        session.warn_once("reading the cells run before loading", e)
    hooks = CellHooks(ip, session)
    ip.register_magics(CaptureMagics(ip, hooks, nb_state))
    ip.events.register("pre_run_cell", hooks.pre_run_cell)
    ip.events.register("post_run_cell", hooks.post_run_cell)
    state = _State(hooks, _api.exit_status)
    # a kernel that exits or restarts with a run open did not finish it
    _api.exit_status = "crashed"
    return state


def unregister(ip, state: _State) -> None:
    """Remove the cell hooks and restore the exit status."""
    for ev, fn in (
        ("pre_run_cell", state.hooks.pre_run_cell),
        ("post_run_cell", state.hooks.post_run_cell),
    ):
        try:
            ip.events.unregister(ev, fn)
        except ValueError:
            pass
    _api.exit_status = state.exit_status
