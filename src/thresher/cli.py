"""The `thresher` command: one sub-command per study plus datasets, models and runs.

Every study command takes the same ``--config FILE`` and ``--set key=value`` as its shortcut
flags; precedence is defaults <- YAML <- shortcut flags <- ``--set``, and the merged config is
validated before any data is read.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from thresher.threads import set_wait_policy

set_wait_policy()  # before anything loads torch: see thresher.threads

from thresher.data import DataError  # noqa: E402
from thresher.runs.config import ConfigError, dump_yaml, load_config  # noqa: E402
from thresher.runs.publish import add_report_arguments, report_command  # noqa: E402
from thresher.runs.store import CONFIG_FILE, RunLookupError, RunStore, read_results  # noqa: E402
from thresher.studies import Command, Study, load_builtin  # noqa: E402
from thresher.studies.common import SEED_HELP, THREADS_HELP  # noqa: E402
from thresher.train import Diverged, set_threads  # noqa: E402

RUNS_ACTIONS = {
    "list": "newest runs first",
    "show": "one run in full",
    "compare": "runs side by side",
    "delete": "remove runs, folders and index rows together",
    "gc": "drop index rows of vanished folders and leftover temporary files",
    "reindex": "rebuild the index from the run folders",
    "export": "replay completed runs into MLflow or TensorBoard (--to, --uri)",
}
COMMON_FLAGS = (
    ("--seed", "seed", SEED_HELP),
    ("--device", "device", "auto, cpu, cuda, cuda:N or mps (auto: cuda > mps > cpu)"),
    ("--data-dir", "data_dir", "data folder (default: $THRESHER_DATA, else ./data)"),
    ("--threads", "threads", THREADS_HELP),
    ("--track", "track", "mirror the run into none, mlflow or tensorboard"),
)


def _add_study(sub: argparse._SubParsersAction, study: Study) -> None:
    p = sub.add_parser(study.name, help=study.help, description=study.help)
    p.add_argument("--config", help="YAML file of config values")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set fit.lr=0.1")
    p.add_argument("--name", "--run-name", dest="name",
                   help="run name (default: timestamp + random suffix); the name of an "
                   "unfinished run with the same config resumes it")
    p.add_argument("--resume", metavar="RUN",
                   help="continue an unfinished run (id, name or folder) with its own config, "
                   "keeping every unit of work it finished")
    p.add_argument("--runs-dir", help="results root (default: $THRESHER_RUNS, else ./runs)")
    p.add_argument("--print-config", action="store_true",
                   help="print the merged config as YAML and exit")
    p.add_argument("--sweep", help=argparse.SUPPRESS)  # set by `thresher sweep` on its runs
    p.add_argument("--no-index", action="store_true", help=argparse.SUPPRESS)  # ditto
    for f in study.flags:
        if f.switch:
            p.add_argument(f.flag, dest=f"key:{f.key}", action="store_const", const="true",
                           help=f"{f.help} [{f.key}]")
        else:
            p.add_argument(f.flag, dest=f"key:{f.key}", help=f"{f.help} [{f.key}]",
                           nargs=f.nargs, metavar=_metavar(f.flag))
    for flag, key, text in COMMON_FLAGS:
        p.add_argument(flag, dest=f"key:{key}", help=f"{text} [{key}]", metavar=_metavar(flag))
    p.set_defaults(handler=lambda args: _run_study(study, args))
    if study.commands:
        actions = p.add_subparsers(dest="action", metavar="ACTION",
                                   help="optional: " + ", ".join(c.name for c in study.commands))
        for command in study.commands:
            _add_command(actions, command)


def _metavar(flag: str) -> str:
    """``--data-dir`` -> ``DATA_DIR`` (the default would show the internal ``key:`` dest)."""
    return flag.lstrip("-").replace("-", "_").upper()


def _add_command(sub: argparse._SubParsersAction, command: Command) -> None:
    p = sub.add_parser(command.name, help=command.help, description=command.help)
    command.add_arguments(p)
    p.set_defaults(command_handler=command.handler)


def _shortcut_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for dest, value in vars(args).items():
        if dest.startswith("key:") and value is not None:
            text = "[" + ", ".join(value) + "]" if isinstance(value, list) else value
            out.append(f"{dest[4:]}={text}")
    return out


def _run_study(study: Study, args: argparse.Namespace) -> int:
    """Config, then every check that needs no run (the store, the data), then the run."""
    store = RunStore(args.runs_dir, indexed=not args.no_index)
    overrides = _shortcut_overrides(args) + args.overrides
    config_file, name = args.config, args.name
    if args.resume is not None:
        given = [f"--config {args.config}"] * bool(args.config) + [f"--name {args.name}"] * \
            bool(args.name) + overrides
        if given:
            raise ConfigError(f"--resume continues a run with its own config; drop "
                              f"{', '.join(given)}")
        record = store.get(args.resume)
        if record.study != study.name:
            raise ConfigError(f"run {record.id} is a {record.study} run, not {study.name}")
        config_file, name = str(record.path / CONFIG_FILE), record.name
    cfg = load_config(study.config, config_file, overrides, validate=not args.print_config)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    store.check_writable()
    if args.sweep:
        _stop_with_parent()
    if hasattr(cfg, "threads"):
        set_threads(cfg.threads)
    prepared = study.prepare(cfg, store)
    run = store.start(study.name, cfg, name=name, seed=getattr(cfg, "seed", None),
                      sweep=args.sweep)
    try:
        with run:
            run.metrics = study.run(cfg, run, prepared)
    except (KeyboardInterrupt, OSError):
        done = len(run.units.keys())
        print(f"thresher: run {run.id} stopped with {done} unit(s) of work kept in {run.dir}; "
              f"`thresher {study.name} --resume {run.id}` continues it", file=sys.stderr)
        raise
    results = read_results(run.dir)
    if results is not None:
        print(results, end="")
    print(f"run {run.id}: {run.dir}")
    return 0


def _stop_with_parent(interval: float = 1.0) -> None:
    """In a sweep's worker: SIGTERM ourselves when the driver is gone (even killed with
    SIGKILL), so the run records itself as interrupted instead of going on unwatched."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="thresher-parent-watch", daemon=True).start()


def _datasets(args: argparse.Namespace) -> int:
    from thresher.data import list_datasets
    from thresher.runs.report import format_table

    rows = [{"name": d.name, "classes": d.num_classes,
             "shape": "x".join(map(str, d.shape)) if d.shape else "-",
             "present": "yes" if d.available else "no", "cached": "yes" if d.cached else "no",
             "location": d.location, "description": d.description}
            for d in list_datasets(args.data_dir)]
    print(format_table(rows))
    return 0


def _models(args: argparse.Namespace) -> int:
    from thresher.models import list_models
    from thresher.runs.report import format_table

    print(format_table([{"name": m.name, "description": m.description} for m in list_models()]))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from thresher.runs import commands

    store = RunStore(args.runs_dir)
    if args.action == "list":
        print(commands.runs_list(store, study=args.study, status=args.status, limit=args.limit))
    elif args.action == "show":
        print(commands.runs_show(store, args.refs[0]))
    elif args.action == "compare":
        print(commands.runs_compare(store, args.refs))
    elif args.action == "delete":
        print(commands.runs_delete(store, args.refs, force=args.force))
    elif args.action == "gc":
        statuses = tuple(s for s in (args.status or "").split(",") if s)
        print(commands.runs_gc(store, statuses, dry_run=args.dry_run))
    elif args.action == "export":
        from thresher.runs.export import runs_export

        print(runs_export(store, args.refs, args.to, args.uri))
    else:
        print(commands.runs_reindex(store))
    return 0


def _report(args: argparse.Namespace) -> int:
    print(report_command(args.runs_dir, args.study, args.sweep, args.out, args.fmt))
    return 0


def sweeps_backends() -> tuple[str, ...]:
    from thresher.runs.sweep import BACKENDS

    return BACKENDS


def _sweep(args: argparse.Namespace) -> int:
    from thresher.runs import sweep as sweeps
    from thresher.runs.commands import sweep_table

    store = RunStore(args.runs_dir)
    if args.target == "status":
        if not args.sweep_name:
            raise ConfigError("sweep status needs the sweep's name")
        print(sweep_table(sweeps.sweep_status(store, args.sweep_name)))
        return 0
    studies, _ = load_builtin()
    study = studies[args.target]
    if args.sweep_name:
        raise ConfigError(f"unexpected argument {args.sweep_name!r}; give grid values with "
                          "--grid key=v1,v2")
    plan = sweeps.plan(study, args.config, args.overrides, sweeps.parse_grid(args.grid),
                       args.seeds, args.name)
    jobs, gpus = sweeps.default_jobs()
    jobs = args.jobs or jobs
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    if args.backend == "ray":
        from thresher.runs.ray_backend import ray_launcher

        launch = ray_launcher(args.address, jobs, gpus)
    else:
        launch = sweeps.local_launcher(jobs, gpus)
    summary = sweeps.run_sweep(plan, store, launch)
    print(sweep_table(summary))
    failed = [r["id"] for r in summary["runs"] if r["status"] not in sweeps.FINAL]
    if failed:
        print(f"thresher: {len(failed)} run(s) of sweep {plan.name} did not complete; run the "
              "same command again to retry them", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thresher", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("datasets", help="list datasets, where their files are, cache state")
    p.add_argument("--data-dir", help="data folder (default: $THRESHER_DATA, else ./data)")
    p.set_defaults(handler=_datasets)
    sub.add_parser("models", help="list models").set_defaults(handler=_models)

    p = sub.add_parser("runs", help="inspect and tidy the results store")
    p.add_argument("action", choices=RUNS_ACTIONS, metavar="ACTION",
                   help="; ".join(f"{k}: {v}" for k, v in RUNS_ACTIONS.items()))
    p.add_argument("refs", nargs="*", help="run ids (study/name), names or run directories")
    p.add_argument("--study", help="only runs of this study (list)")
    p.add_argument("--status", help="only runs with this status (list); gc: also delete runs "
                   "with these statuses, comma-separated (e.g. failed,died)")
    p.add_argument("--limit", type=int, default=20, help="at most this many rows (list)")
    p.add_argument("--force", action="store_true", help="delete: also runs still going")
    p.add_argument("--dry-run", action="store_true", help="gc: only say what would go")
    p.add_argument("--to", help="export: mlflow or tensorboard")
    p.add_argument("--uri", help="export: MLflow tracking URI (default: sqlite:///mlflow.db "
                   "here) or TensorBoard log folder (default: each run's <run dir>/tensorboard)")
    p.add_argument("--runs-dir", help="results root (default: $THRESHER_RUNS, else ./runs)")
    p.set_defaults(handler=_runs)

    p = sub.add_parser("sweep", help="a study over a grid of values x seeds, resumable",
                       description="thresher sweep STUDY --grid key=v1,v2 --seeds 0 1 2 | "
                       "thresher sweep status NAME")
    p.add_argument("target", metavar="STUDY", help="the study to sweep, or `status`")
    p.add_argument("sweep_name", nargs="?", metavar="NAME", help="with status: the sweep")
    p.add_argument("--config", help="YAML file of config values shared by every run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value shared by every run (repeatable)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="values of one config key (repeatable: the cross product is swept)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED",
                   help="seeds of every grid point (default: 0)")
    p.add_argument("--name", help="sweep name (default: study + a hash of the sweep)")
    p.add_argument("--backend", choices=sweeps_backends(), default="local",
                   help="local: a process pool; ray: Ray tasks (pip install thresher[ray])")
    p.add_argument("--jobs", type=int, help="runs at once (default: one per GPU, else per core)")
    p.add_argument("--address", help="ray: the cluster (auto, or HOST:PORT; default: start a "
                   "local one)")
    p.add_argument("--runs-dir", help="results root (default: $THRESHER_RUNS, else ./runs)")
    p.set_defaults(handler=_sweep)

    p = sub.add_parser("report", help="one self-contained page (HTML or Markdown) of every "
                       "study's results and sweeps")
    add_report_arguments(p)
    p.set_defaults(handler=_report)

    studies, commands = load_builtin()
    for study in studies.values():
        _add_study(sub, study)
    for command in commands.values():
        _add_command(sub, command)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's time limit or preemption), handled like Ctrl-C so the run in
    progress is recorded as interrupted instead of vanishing."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    """Raise `Terminated` where the main thread is, unless that is inside an import or a
    finaliser, where Python would print and swallow the exception: then retry in 50 ms."""
    code = frame.f_code if frame is not None else None
    if code is not None and (code.co_filename.startswith("<frozen") or code.co_name == "__del__"):
        signal.signal(signal.SIGALRM, _terminate)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    raise Terminated("signal SIGTERM")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "runs" and args.action in ("show", "compare", "delete", "export") and \
            not args.refs:
        parser.error(f"runs {args.action} needs at least one run reference")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(message)s")
    logging.getLogger("thresher").setLevel(logging.WARNING if args.quiet else
                                           logging.DEBUG if args.verbose else logging.INFO)
    handler = getattr(args, "command_handler", None) or args.handler
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, _terminate), signal.getsignal(signal.SIGALRM)
    try:
        return handler(args)
    except (ConfigError, DataError, RunLookupError, ValueError, FileNotFoundError) as e:
        print(f"thresher: error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"thresher: error: {e} (the run is recorded as diverged)", file=sys.stderr)
        return 3
    except OSError as e:  # a full or read-only disk mid-run, a lost mount
        print(f"thresher: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("thresher: interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if in_main_thread:
            if signal.getsignal(signal.SIGALRM) is _terminate:  # a retry still pending
                signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGALRM, previous[1])


if __name__ == "__main__":
    sys.exit(main())
