"""Optional MLflow mirror of continual runs (``--track mlflow``).

One MLflow run per learner and seed: the config as parameters; every testing interval the
accuracy on seen tasks, the mean loss, the memory size, the learning rate and each task's
accuracy; at the end the final accuracy (on the last task), the average and average incremental
accuracy, forgetting and BWT. mlflow is imported only here, only when asked for.

The default store is a local SQLite file, ``./mlflow.db`` (no server; view it with ``mlflow ui
--backend-store-uri sqlite:///mlflow.db``): current MLflow refuses the older ``./mlruns`` file
store unless MLFLOW_ALLOW_FILE_STORE=true is set.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from thresher.runs.config import config_to_dict


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


class MlflowTracker:
    def __init__(self, cfg: Any, run_name: str, uri: str | None) -> None:
        try:
            import mlflow
        except ImportError:
            raise RuntimeError("track 'mlflow' needs the mlflow package: "
                               "pip install 'thresher[mlflow]'") from None
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri or f"sqlite:///{Path('mlflow.db').resolve()}")
        try:
            mlflow.set_experiment("thresher-continual")
        except mlflow.exceptions.MlflowException as e:
            raise RuntimeError(f"MLflow refused the tracking store {mlflow.get_tracking_uri()}: "
                               f"{str(e).splitlines()[0]}") from e
        self.params = {k: str(v) for k, v in _flatten(config_to_dict(cfg)).items()}
        self.run_name = run_name

    def start(self, learner: str, seed: int) -> None:
        self.mlflow.start_run(run_name=f"{self.run_name}-{learner}-seed{seed}")
        self.mlflow.log_params({**self.params, "learner": learner, "run_seed": seed})

    def point(self, point: dict) -> None:
        metrics = {"overall_accuracy": point["seen"], "loss": point["loss"],
                   "memory_size": point["memory"], "learning_rate": point["lr"]}
        metrics.update({f"task_{j}_accuracy": a for j, a in enumerate(point["accuracy"])})
        self.mlflow.log_metrics(metrics, step=point["batch"])

    def finish(self, result: dict) -> None:
        final = result["R"][-1]
        metrics = {"final_accuracy": final[-1], "average_accuracy": result["avg_acc"],
                   "average_incremental_accuracy": result["inc_acc"],
                   "forgetting": result["forgetting"], "bwt": result["bwt"],
                   "seconds_per_task": result["seconds_per_task"]}
        self.mlflow.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})
        self.mlflow.end_run()
