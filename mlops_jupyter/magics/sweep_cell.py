"""A notebook cell as a sweep objective that runs in other processes (`%%mlops_sweep
--workers N` / `--cluster VAR`).

The worker gets the cell's source (compiled here first, so a syntax error shows in the
notebook) and the values of the names the cell reads from the notebook's namespace,
cloudpickled; modules are imported in the worker by name. A value that cannot be pickled
(an open file, a lock, a live database connection) refuses the sweep with an error naming
the variable: trials never run with a silently different namespace.

No IPython import here: Dask workers on other machines may not have it."""

from __future__ import annotations

import ast
import builtins
import importlib
import types
from typing import Any

from ..errors import InvalidInputError

FILENAME = "<mlops_sweep cell>"


class CellNotShippable(InvalidInputError):
    """A value the cell reads cannot be sent to the worker processes."""


def free_names(source: str) -> list[str]:
    """Names the code reads (anywhere in it, functions and comprehensions included), in
    order of first use; the caller keeps those the namespace holds."""
    seen: dict[str, None] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            seen.setdefault(node.id, None)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for n in node.names:
                seen.setdefault(n, None)
    return list(seen)


def _dumps(obj: Any) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        raise InvalidInputError(
            "--workers/--cluster need cloudpickle: pip install 'mlops-jupyter[dask]'"
        ) from None
    return cloudpickle.dumps(obj)


class CellObjective:
    """Callable objective(trial) that executes the cell in a namespace rebuilt from the
    shipped values (once per process), a fresh copy of it per trial."""

    def __init__(
        self, source: str, values: dict[str, bytes], modules: dict[str, str], result: str | None
    ) -> None:
        self.source = source
        self.values = values  # name -> cloudpickled value
        self.modules = modules  # name -> module name, imported where the trial runs
        self.result = result  # the variable holding the trial's value (None: last logged)
        self._base: dict[str, Any] | None = None
        self._code: types.CodeType | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_base", "_code")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._base, self._code = None, None

    def namespace(self) -> dict[str, Any]:
        """The cell's globals in this process (built on the first call)."""
        if self._base is None:
            import pickle

            base: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
            for name, mod in self.modules.items():
                base[name] = importlib.import_module(mod)
            for name, raw in self.values.items():
                base[name] = pickle.loads(raw)  # noqa: S301 - our own payload, from our kernel
            self._base = base
            self._code = compile(self.source, FILENAME, "exec")
        return self._base

    def __call__(self, trial: Any) -> Any:
        ns = dict(self.namespace())  # a trial's assignments do not leak into the next one
        ns["trial"] = trial
        assert self._code is not None
        exec(self._code, ns)  # noqa: S102 - the user's own cell, as %%mlops_sweep does in process
        if self.result is None:
            return None
        if self.result not in ns:
            raise InvalidInputError(f"--objective {self.result}: the cell set no such variable")
        return ns[self.result]


def ship_cell(
    source: str, user_ns: dict[str, Any], hidden: set[str] | frozenset[str], result: str | None
) -> CellObjective:
    """Build the CellObjective of `source` (already transformed from IPython syntax) with
    the values it reads from `user_ns`. Raises CellNotShippable naming the first variable
    that cannot be pickled, and InvalidInputError when the cell needs the IPython shell."""
    compile(source, FILENAME, "exec")  # a syntax error shows here, not in every worker
    values: dict[str, bytes] = {}
    modules: dict[str, str] = {}
    for name in free_names(source):
        if name == "trial" or name not in user_ns:
            continue  # a builtin, or a name the cell sets itself
        if name == "get_ipython" or (name in hidden and not hasattr(builtins, name)):
            raise InvalidInputError(
                f"the cell uses {name!r} (IPython magics or shell history), which worker "
                "processes do not have: move that line out of the sweep cell"
            )
        value = user_ns[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        try:
            values[name] = _dumps(value)
        except Exception as e:
            raise CellNotShippable(
                f"variable {name!r} ({type(value).__name__}) cannot be sent to the worker "
                f"processes ({type(e).__name__}: {e}); open it inside the cell, or run the "
                "sweep without --workers/--cluster"
            ) from None
    return CellObjective(source, values, modules, result)
