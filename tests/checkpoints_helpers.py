"""Training processes for the checkpoint tests.

The processes are forked from a multiprocessing fork server that has imported torch once,
so each one starts in a fraction of a second; they are still separate OS processes, killed
with real SIGKILLs and resumed by fresh processes that share nothing with the one killed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

_ctx = None


def context():
    """A forkserver context preloading torch (created once per test session)."""
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload(["torch", "torch._dynamo", "numpy", "polars", "mlops_jupyter"])
    return _ctx


def run_training(store: str, run_name: str, epochs: int, kill_epoch: int, mode: str, out: str):
    """Start train_torch in a new process; return the Process (already started)."""
    # the forkserver's environment is the first caller's: pass the artifacts folder along
    artifacts = os.environ.get("MLOPS_JUPYTER_ARTIFACTS")
    p = context().Process(
        target=train_torch,
        args=(store, run_name, epochs, kill_epoch, mode, out, artifacts),
        daemon=False,
    )
    p.start()
    return p


def train_torch(
    store: str,
    run_name: str,
    epochs: int,
    kill_epoch: int,
    mode: str,
    out: str,
    artifacts: str | None = None,
):
    """A small regression model with dropout, Adam and a step LR schedule; checkpoints every
    epoch. mode: "self" kills itself mid-epoch `kill_epoch`, "save" kills itself after the
    temp file of that epoch's checkpoint is written but before its rename, "outside" prints
    progress to a pipe file and sleeps so a parent can kill it at any moment."""
    os.environ["MLOPS_JUPYTER_STORE"] = store
    os.environ["MLOPS_JUPYTER_TELEMETRY"] = "0"
    if artifacts:
        os.environ["MLOPS_JUPYTER_ARTIFACTS"] = artifacts
    import numpy as np
    import torch

    import mlops_jupyter as mj

    if mode == "save":
        real_replace = os.replace

        def replace(src, dst):
            if str(dst).endswith(".pt") and f"-e{kill_epoch}." in str(dst):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst)

        os.replace = replace
    torch.manual_seed(0)
    np.random.seed(0)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(256, 8, generator=g)
    y = (X @ torch.randn(8, 1, generator=g)).squeeze(1) + 0.1 * torch.randn(256, generator=g)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    progress = open(out + ".progress", "a", buffering=1)
    with mj.start_run(run_name, experiment="ckpt"):
        state = mj.resume(model=model, optimizer=opt, scheduler=sched)
        if state:
            progress.write(f"resumed {state.epoch}\n")
        for epoch in range(state.next_epoch, epochs):
            perm = torch.randperm(256)
            noise = float(np.random.rand())  # numpy's generator is part of the state too
            for i, b in enumerate(range(0, 256, 32)):
                if mode == "self" and epoch == kill_epoch and i == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                idx = perm[b : b + 32]
                loss = ((model(X[idx]).squeeze(1) - y[idx]) ** 2).mean() * (1 + 0.01 * noise)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            mj.log(step=epoch, loss=loss.item())
            mj.checkpoint(
                model=model,
                optimizer=opt,
                scheduler=sched,
                epoch=epoch,
                metrics={"val_loss": loss.item()},
                keep_last=2,
            )
            progress.write(f"epoch {epoch}\n")
            if mode == "outside":
                import time

                time.sleep(0.2)
    torch.save(model.state_dict(), out)
    sys.stdout.flush()
