"""`mlops-jupyter models package NAME --target bentoml`: a registry model as a BentoML 1.4
service directory, and the loader that service runs.

The directory holds `service.py` (a `@bentoml.service` class whose `predict` API takes the
model's declared input fields), `bentofile.yaml`, `model/` (the version's stored files,
checked against the registered digest), `model.json` (flavor, loading metadata, digest),
`signature.json` and a README. The service depends on mlops_jupyter: it loads the files with
the registry's own loader and predicts with `serving.model.Predictor`, checking inputs with
`serving.signature.check_fields` and writing outputs with the server's encoder, so a Bento
answers exactly what `mlops-jupyter serve` answers for the same input (unbatched).
"""

from __future__ import annotations

import json
import keyword
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MlopsJupyterError
from .signature import BadInput, check_fields, describe, field_names

__all__ = ["BadInput", "PackageError", "PackagedModel", "TARGETS", "package"]

TARGETS = ("bentoml",)
# Flavors whose files the packaged service can load (MLX runs on Apple silicon, while
# BentoML images are Linux; "files" holds no callable model at all).
SUPPORTED = ("torch", "pickle")
# what the package itself writes: --code must not replace these
RESERVED = {"service.py", "bentofile.yaml", "model", "model.json", "signature.json"}
RESERVED |= {"README.md", "wheels"}


class PackageError(MlopsJupyterError):
    """A model that cannot be packaged, or a package folder that cannot be written/read."""


# -- writing a package -------------------------------------------------------------------
def package(
    spec: str,
    out: str | os.PathLike,
    *,
    target: str = "bentoml",
    force: bool = False,
    trusted: bool = False,
    code: list[str | os.PathLike] | None = None,
    wheels: list[str | os.PathLike] | None = None,
) -> Path:
    """Write the model `spec` (NAME, NAME@stage, NAME@alias, NAME:version) as a BentoML
    service directory at `out`; returns it. An existing non-empty `out` is refused unless
    `force` (then replaced once the new package is complete). `trusted`: the model is
    unpickled in full when the service starts (estimators, callables; see docs/serving.md).
    `code`: Python files or package folders copied beside service.py (the model's own
    module, importable in the Bento); `wheels`: wheel files bundled into the Bento (e.g.
    mlops_jupyter's own, where no package index serves it)."""
    from .. import registry
    from . import model as smodel

    if target not in TARGETS:
        raise InvalidInputError(
            f"unknown package target {target!r}; supported: {', '.join(TARGETS)}"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PackageError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PackageError(f"{out} exists and is not empty; pass --force to replace it")
    extra = [_existing(p, "code") for p in code or []]
    whl = [_existing(p, "wheel") for p in wheels or []]
    names = [p.name for p in extra]
    if clash := sorted({n for n in names if n in RESERVED or names.count(n) > 1}):
        raise InvalidInputError(
            f"code {clash[0]!r} would overwrite a file of the package (or another --code)"
        )

    info = registry.model_version(**smodel.parse_spec(spec))
    what = f"{info['name']} v{info['version']}"
    if info["flavor"] not in SUPPORTED:
        why = {
            "mlx": "MLX models run on Apple silicon, BentoML images on Linux",
            "files": "it was registered as files, not as a model object",
        }.get(info["flavor"], "no packaged loader for it")
        raise PackageError(
            f"{what} has flavor {info['flavor']!r}, which cannot be packaged for BentoML "
            f"yet ({why}); supported flavors: {', '.join(SUPPORTED)}"
        )
    # Load it once here: the digest is checked, and a model that would not load or could
    # not be served (or needs trust that was not given) is refused now, not in the Bento.
    # The --code files are importable meanwhile, as they will be beside service.py.
    paths = [str(p.parent) for p in extra if str(p.parent) not in sys.path]
    sys.path[:0] = paths
    try:
        pred = smodel.load(spec, trusted=trusted, version=info["version"])
    except registry.UntrustedModelError as e:
        raise PackageError(
            f"{what}: {e}. Package it with --trusted (trusted=True) if you registered it "
            "yourself: the service will then unpickle it in full"
        ) from None
    finally:
        for p in paths:
            sys.path.remove(p)
    params = _params(pred.signature)

    tmp = out.parent / f".{out.name}.incoming-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    try:
        src = registry.model_path(info["name"], version=info["version"])
        shutil.copytree(src, tmp / "model")
        if registry._digest(tmp / "model")[0] != info["digest"]:
            raise PackageError(f"{what}: stored files changed while they were copied")
        for p in extra:
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp / p.name)
        if whl:
            (tmp / "wheels").mkdir()
            for p in whl:
                shutil.copy2(p, tmp / "wheels" / p.name)
        meta = {
            "name": info["name"],
            "version": info["version"],
            "flavor": info["flavor"],
            "meta": info["meta"],
            "digest": info["digest"],
            "trusted": trusted,
            "kind": pred.kind,
            "default_dtype": pred.default_dtype,
            "mlops_jupyter": _our_version(),
        }
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "signature.json").write_text(json.dumps(pred.signature, indent=2) + "\n")
        cls = _class_name(info["name"])
        svc = _service_name(info["name"])
        (tmp / "service.py").write_text(_service_py(info, cls, svc, pred, params))
        files = ["service.py", "model.json", "signature.json", "README.md", "model/**"]
        files += [p.name if p.is_file() else f"{p.name}/**" for p in extra]
        (tmp / "bentofile.yaml").write_text(_bentofile(info, cls, pred, files, whl))
        (tmp / "README.md").write_text(_readme(info, cls, pred, params))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _existing(p: str | os.PathLike, what: str) -> Path:
    """A --code path (a .py file or a package folder) or a --wheel path (a .whl file)."""
    path = Path(p)
    if not path.exists():
        raise InvalidInputError(f"{what} {str(p)!r} does not exist")
    ok = path.suffix == ".whl" and path.is_file()
    if what == "code":
        ok = path.is_dir() or (path.is_file() and path.suffix == ".py")
    if not ok:
        need = "a .py file or a package folder" if what == "code" else "a .whl file"
        raise InvalidInputError(f"{what} {str(p)!r} must be {need}")
    return path.resolve()


def _our_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlops-jupyter")
    except PackageNotFoundError:  # a checkout on the path, not installed
        return ""


# names the generated predict() body uses: a parameter must not shadow them
_BODY = {"self", "BadInput", "UnprocessableEntity"}


def _params(sig: dict[str, Any] | None) -> list[str] | None:
    """The predict API's parameter names: the signature's fields when all are usable as
    Python names, else None (one `inputs` object of fields)."""
    names = field_names(sig) if sig is not None else ["inputs"]
    ok = all(
        n.isidentifier() and not keyword.iskeyword(n) and n not in _BODY and n[0] != "_"
        for n in names
    )
    return names if ok else None


def _class_name(name: str) -> str:
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    cls = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return cls if cls[0].isalpha() else f"Model{cls}"


def _service_name(name: str) -> str:
    """A valid Bento name: lowercase letters, digits, '-', '_', '.', at most 63."""
    s = re.sub(r"[^a-z0-9._-]+", "-", name.lower())[:63].strip("-._")
    return s or "model"


def _field_doc(sig: dict[str, Any] | None, name: str) -> str:
    if sig is None:
        return "a batch: one array of any shape"
    if sig["kind"] == "columns":
        dt = next(c["dtype"] for c in sig["columns"] if c["name"] == name)
        return f"column {name}: {dt}, one value per row"
    f = next(f for f in sig["fields"] if f["name"] == name)
    dims = ", ".join(["batch", *(str(s) if s >= 0 else "*" for s in f["shape"])])
    return f"{name}: {f['dtype']}[{dims}]"


def _service_py(info: dict, cls: str, svc: str, pred: Any, params: list[str] | None) -> str:
    sig = pred.signature
    if params is None:
        args = '        inputs: Annotated[dict, Field(description="the fields, batch first")],\n'
        call = "inputs"
    else:
        args = "".join(
            f"        {n}: Annotated[list, Field(description={json.dumps(_field_doc(sig, n))})],\n"
            for n in params
        )
        call = "{" + ", ".join(f"{json.dumps(n)}: {n}" for n in params) + "}"
    return f'''"""BentoML service for the registered model {info["name"]} v{info["version"]}
(written by `mlops-jupyter models package`; see README.md). Input: {describe(sig)}."""

from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import UnprocessableEntity
from pydantic import Field

from mlops_jupyter.serving.bentoml_pkg import BadInput, PackagedModel

HERE = Path(__file__).resolve().parent


@bentoml.service(name={json.dumps(svc)}, traffic={{"timeout": 60}})
class {cls}:
    """{info["name"]} v{info["version"]} ({pred.kind})."""

    def __init__(self) -> None:
        # the registered files in ./model, checked against the registry's digest
        self.model = PackagedModel(HERE)

    @bentoml.api
    def predict(
        self,
{args}    ) -> dict:
        """Predictions for a batch, as `mlops-jupyter serve` answers them."""
        try:
            return self.model.predict({call})
        except BadInput as e:
            raise UnprocessableEntity(str(e)) from None
'''


def _bentofile(info: dict, cls: str, pred: Any, files: list[str], whl: list[Path]) -> str:
    import numpy

    ours = _our_version()
    pkgs = [f"mlops-jupyter=={ours}" if ours else "mlops-jupyter", f"numpy=={numpy.__version__}"]
    if pred.kind == "torch":
        import torch

        pkgs.append(f"torch=={torch.__version__.split('+')[0]}")
    elif (dist := _dist_of(info["meta"].get("cls", ""))) and dist not in pkgs:
        pkgs.append(dist)  # an estimator's library (e.g. scikit-learn), pinned to this one
    # BentoML installs the requirements before the bundled wheels: a package a wheel
    # provides (e.g. mlops-jupyter, where no index serves it) must not be asked of the index
    bundled = {_norm(p.name.split("-")[0]) for p in whl}
    pkgs = [p for p in pkgs if _norm(re.split(r"[=<>!~ ]", p)[0]) not in bundled]
    lines = [
        "# Build with `bentoml build` in this folder (see README.md).",
        f'service: "service:{cls}"',
        "labels:",
        f"  mlops_jupyter_model: {json.dumps(info['name'])}",
        f'  mlops_jupyter_version: "{info["version"]}"',
        "include:",
        *(f"  - {json.dumps(f)}" for f in files),
        "python:",
        *(["  packages:", *(f"    - {json.dumps(p)}" for p in pkgs)] if pkgs else []),
        # locking resolves every package through an index at build time: off, so a
        # build works offline; pin what you need above
        "  lock_packages: false",
    ]
    if whl:
        lines += ["  wheels:", *(f'    - "wheels/{p.name}"' for p in whl)]
    lines += ["docker:", '  python_version: "3.11"']
    return "\n".join(lines) + "\n"


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _dist_of(cls_ref: str) -> str | None:
    """'scikit-learn==1.5.2' for 'sklearn.linear_model._logistic:LogisticRegression': the
    installed distribution of a pickled object's class; None for the user's own modules."""
    from importlib.metadata import packages_distributions, version

    top = cls_ref.partition(":")[0].partition(".")[0]
    dists = packages_distributions().get(top) or []
    if not top or top in ("builtins", "__main__", "numpy") or len(dists) != 1:
        return None
    return f"{dists[0]}=={version(dists[0])}"


def _readme(info: dict, cls: str, pred: Any, params: list[str] | None) -> str:
    sig = pred.signature
    if params is None:
        body = '{"inputs": {' + ", ".join(f'"{n}": [...]' for n in field_names(sig)) + "}}"
    else:
        body = "{" + ", ".join(f'"{n}": [...]' for n in params) + "}"
    return f"""# {info["name"]} v{info["version"]} as a BentoML service

Written by `mlops-jupyter models package {info["name"]}:{info["version"]} --target bentoml`.

- `service.py`: the `{cls}` service; `POST /predict` with `{body}`
  (batch first). Input signature: {describe(sig)}.
- `model/`: the registered files (flavor `{info["flavor"]}`, sha256 {info["digest"][:16]}...),
  checked against that digest when the service starts; `model.json`, `signature.json`.
- `bentofile.yaml`: the build file. The service imports mlops_jupyter (its loader and
  predictor), so the Bento's Python packages list `mlops-jupyter`; bundle a wheel of it
  (`--wheel`) where no package index serves it.

```bash
bentoml serve .                     # here, in an environment with bentoml and mlops-jupyter
bentoml build                       # a Bento in the local BentoML store
```

The answer is `{{"predictions": ..., "dtype": ..., "model": ..., "version": ...}}`, the same
predictions `mlops-jupyter serve {info["name"]}:{info["version"]}` gives; input that does not
fit the signature is answered 422 naming the field.
"""


# -- loading a package (inside the Bento) ------------------------------------------------
class PackagedModel:
    """The model of a package folder, loaded with the registry's loader."""

    def __init__(self, folder: str | os.PathLike) -> None:
        from ..registry import _digest, flavors
        from .model import Predictor

        folder = Path(folder)
        try:
            spec = json.loads((folder / "model.json").read_text())
        except (OSError, ValueError) as e:
            raise PackageError(f"{folder}: not a model package ({e})") from None
        what = f"{spec['name']} v{spec['version']}"
        if _digest(folder / "model")[0] != spec["digest"]:
            raise PackageError(f"{what}: the files in {folder / 'model'} changed since packaging")
        obj = flavors.load(folder / "model", spec["flavor"], spec["meta"], trusted=spec["trusted"])
        if hasattr(obj, "eval") and Predictor._kind(obj) in ("torch", "mlx"):
            obj.eval()
        info = {k: spec[k] for k in ("name", "version", "flavor", "meta")}
        self.name, self.version = spec["name"], spec["version"]
        self.predictor = Predictor(obj, info)

    def predict(self, values: dict[str, Any]) -> dict[str, Any]:
        """{field: batch} -> the answer of `mlops-jupyter serve` (predictions, dtype,
        model, version); BadInput when the values do not fit the signature."""
        from .app import _encode

        p = self.predictor
        if not isinstance(values, dict):
            raise BadInput("inputs must be an object of fields")
        fields = check_fields(values, p.signature, p.default_dtype)
        text, dtype = _encode(p(fields))
        return {
            "predictions": json.loads(text),
            "dtype": json.loads(dtype),
            "model": self.name,
            "version": self.version,
        }
