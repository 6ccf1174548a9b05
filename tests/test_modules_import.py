"""Every module of the package compiles and imports on this Python (the compatibility venvs
run this on the oldest and the newest supported Python): a syntax or standard-library
feature the version lacks fails here even in a module that no test of that venv loads.
Only a third-party package that is not installed (an optional extra: torch, mlx...) may be
missing."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "mlops_jupyter"


def _modules() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        if rel.name == "__main__":  # running it is the CLI, not an import
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out.append(".".join(parts))
    return out


MODULES = _modules()


def test_the_package_has_modules_to_check():
    assert len(MODULES) > 200 and "mlops_jupyter.trackserver.app" in MODULES


def test_every_module_imports_on_this_python():
    # an import compiles the whole file first, so a syntax error shows even in a module
    # whose optional extra is missing here
    failed, extras_missing = [], set()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            if not top or top == "mlops_jupyter" or top in sys.stdlib_module_names:
                failed.append(f"{name}: {type(e).__name__}: {e}")
            else:
                extras_missing.add(top)  # an optional extra this venv does not install
        except Exception as e:  # noqa: BLE001 - each module's failure is reported
            failed.append(f"{name}: {type(e).__name__}: {e}")
    assert not failed, "\n".join(failed)
    print(f"{len(MODULES)} modules; optional packages not installed here: {sorted(extras_missing)}")
