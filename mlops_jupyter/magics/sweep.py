"""%%mlops_sweep: run a cell once per optuna trial, and the live sweep view in notebooks.

    %%mlops_sweep --n-trials 30 --pruner median
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    for epoch in range(10):
        mj.log(step=epoch, val_loss=train_one_epoch(lr))

The cell sees `trial` in its namespace; the trial's value is the variable named by
`--objective`, else the last value the cell logged (of `--metric`, if given).
`--workers N` runs the trials in N processes and `--cluster VAR` on the Dask cluster of the
`distributed.Client` in VAR: the cell's source and the notebook values it reads travel to
them (sweep_cell.py); the cell's assignments then stay in the workers. The logic lives in
`mlops_jupyter.hpo`; this module only parses arguments and displays."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .. import hpo
from ..errors import InvalidInputError


class _Handle:
    """A display handle the sweep updates in place (one output area per sweep)."""

    def __init__(self, view) -> None:
        self._h = display(view, display_id=True)

    def update(self, view) -> None:
        if self._h is not None:
            self._h.update(view)


@magics_class
class SweepMagics(Magics):
    """Optuna sweep magics of mlops-jupyter."""

    @magic_arguments()
    @argument("-n", "--n-trials", type=int, default=20, help="trials to run (default 20)")
    @argument(
        "-d",
        "--direction",
        choices=["minimize", "maximize"],
        default="minimize",
        help="optimisation direction (default minimize)",
    )
    @argument("--objective", metavar="VAR", help="variable holding the trial's value")
    @argument(
        "--metric", metavar="KEY", help="logged metric that is the objective and is pruned on"
    )
    @argument("--study", metavar="NAME", help="study name; other workers join it by name")
    @argument(
        "--sampler",
        default="tpe",
        choices=["tpe", "random", "cmaes", "gp", "qmc"],
        help="optuna sampler (default tpe)",
    )
    @argument(
        "--pruner",
        default="none",
        choices=["none", "median", "percentile", "hyperband", "successive_halving"],
        help="stop bad trials early from their logged values (default none)",
    )
    @argument("--name", help="name of the sweep run (default: the study name)")
    @argument("-e", "--experiment", help="experiment of the sweep and trial runs")
    @argument("--seed", type=int, help="sampler seed, for a reproducible sweep")
    @argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this")
    @argument("--workers", type=int, default=1, metavar="N", help="run trials in N processes")
    @argument("--cluster", metavar="VAR", help="run trials on the Dask cluster of Client VAR")
    @argument("--no-gate", action="store_true", help="don't wait while the machine is too hot")
    @argument("--no-live", action="store_true", help="don't show the live optimisation view")
    @argument(
        "--result",
        default="sweep_result",
        metavar="VAR",
        help="variable to store the result in (default sweep_result)",
    )
    @cell_magic
    def mlops_sweep(self, line: str, cell: str):
        """Run this cell once per optuna trial, each trial a tracked child run."""
        args = parse_argstring(self.mlops_sweep, line)
        if args.n_trials < 1:
            raise UsageError("--n-trials must be at least 1")
        if args.workers < 1:
            raise UsageError("--workers must be at least 1")
        shell = self.shell
        source = shell.transform_cell(cell)
        code = compile(source, "<mlops_sweep cell>", "exec")
        ns = shell.user_ns
        client = _client(ns, args.cluster) if args.cluster else None

        def objective(trial):
            ns["trial"] = trial
            exec(code, ns)
            if args.objective:
                if args.objective not in ns:
                    raise UsageError(f"--objective {args.objective}: the cell set no such variable")
                return ns[args.objective]
            return None  # the sweep takes the last logged value

        if args.workers > 1 or client is not None:
            from .sweep_cell import ship_cell

            try:
                objective = ship_cell(source, ns, set(shell.user_ns_hidden), args.objective)
            except InvalidInputError as e:
                raise UsageError(str(e)) from None

        result = hpo.sweep(
            objective,
            n_trials=args.n_trials,
            direction=args.direction,
            sampler=args.sampler,
            pruner=args.pruner,
            study=args.study,
            metric=args.metric,
            name=args.name,
            experiment=args.experiment,
            seed=args.seed,
            timeout=args.timeout,
            gate=not args.no_gate,
            live=not args.no_live,
            workers=args.workers,
            cluster=client,
        )
        ns[args.result] = result
        if args.no_live:
            display(result.view)


def _client(ns: dict, var: str):
    """The distributed.Client held by notebook variable `var` (a clear error otherwise)."""
    if var not in ns:
        raise UsageError(f"--cluster {var}: no such variable in the notebook")
    client = ns[var]
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--cluster needs dask: pip install 'mlops-jupyter[dask]'") from None
    if not isinstance(client, Client):
        raise UsageError(
            f"--cluster {var}: expected a distributed.Client, got {type(client).__name__}"
        )
    return client


def register(ip) -> None:
    """Register %%mlops_sweep and make sweeps (also mj.sweep) show a live view."""
    ip.register_magics(SweepMagics(ip))
    hpo.set_display_factory(_Handle)
