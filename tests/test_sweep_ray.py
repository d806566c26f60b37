"""The ray backend of `thresher sweep` on a real local Ray, against the local process pool."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from processes import CLI

pytest.importorskip("ray")

ACTIVE = ["sweep", "active", "--set", "datasets=[digits]", "--set", "budget=200",
          "--set", "fit.epochs=3", "--grid", "methods=margin,random", "--seeds", "0", "1", "2",
          "--name", "al", "--jobs", "2"]


def cells(root: Path) -> dict[tuple[str, int], dict]:
    summary = json.loads((root / "sweeps" / "al" / "sweep_summary.json").read_text())
    assert summary["counts"] == {"completed": 6}
    return {(r["params"]["methods"][0], r["seed"]): r["metrics"] for r in summary["runs"]}


def test_ray_and_local_backends_give_the_same_metrics_seed_for_seed(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths are length-capped
    # Ray keeps a token under the home folder and its sockets under RAY_TMPDIR: both temporary
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HOME": str(tmp_path / "home")}
    try:
        subprocess.run([*CLI, *ACTIVE, "--runs-dir", str(tmp_path / "local")], check=True,
                       timeout=600, env=env, capture_output=True)
        subprocess.run([*CLI, *ACTIVE, "--runs-dir", str(tmp_path / "ray"), "--backend", "ray"],
                       check=True, timeout=600, env=env, capture_output=True)
    finally:
        subprocess.run(["rm", "-rf", ray_tmp], check=False)
    local, ray = cells(tmp_path / "local"), cells(tmp_path / "ray")
    assert set(local) == {(m, s) for m in ("margin", "random") for s in (0, 1, 2)}
    assert local == ray  # every metric of every cell
    assert all("accuracy.digits.<methods>" in metrics for metrics in local.values())
