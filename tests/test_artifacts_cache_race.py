"""The read-through cache's trees under processes fetching the same tree at once (serving
workers starting together): one download, and no process sees the folder replaced under
it while it reads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# a real local store whose tree download takes 0.5 s, so that the processes overlap; each
# download is recorded, then every file of the returned folder is read back at once
FETCH = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlops_jupyter.artifacts import cache
    from mlops_jupyter.artifacts.local import LocalArtifactStore

    class SlowStore(LocalArtifactStore):
        def get_tree(self, prefix, dest):
            with open(sys.argv[2], "a") as f:
                f.write("download\\n")
            time.sleep(0.5)
            return super().get_tree(prefix, dest)

    folder = cache.fetch_tree(SlowStore(sys.argv[1]), "models/clf/v1")
    for i in range(20):
        assert (folder / f"part-{i}.bin").read_bytes() == bytes([i]) * 4096, i
    print(folder)
    """
)


def test_processes_fetching_one_tree_download_it_once(tmp_path, child_env):
    from mlops_jupyter.artifacts.local import LocalArtifactStore

    src = tmp_path / "model"
    src.mkdir()
    for i in range(20):
        (src / f"part-{i}.bin").write_bytes(bytes([i]) * 4096)
    root = tmp_path / "artifacts"
    LocalArtifactStore(str(root)).put_tree("models/clf/v1", src)
    (tmp_path / "fetch.py").write_text(FETCH)
    log = tmp_path / "downloads.log"
    env = dict(child_env, MLOPS_JUPYTER_CACHE=str(tmp_path / "cache"))
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "fetch.py"), str(root), str(log)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # one cached folder
    assert log.read_text().count("download") == 1  # the others waited and used it
