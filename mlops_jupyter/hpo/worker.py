"""A sweep worker process: `python -m mlops_jupyter.hpo.worker` reads two pickles on stdin
(the coordinator's sys.path, then the spec of distributed.work), runs trials until the
study's budget is met and prints how many it ran. Started by `mj.sweep(..., workers=N)`."""

from __future__ import annotations

import io
import pickle
import sys


def main() -> int:
    """Entry point of a worker process."""
    stream = io.BytesIO(sys.stdin.buffer.read())
    # objectives defined in the coordinator's modules import the same way here
    for p in pickle.load(stream):
        if p not in sys.path:
            sys.path.append(p)
    spec = pickle.load(stream)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from .distributed import work

    index = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    print(work(spec, index), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
