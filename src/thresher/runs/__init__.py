"""Runs: typed configs, run directories + SQLite results store, statistics and report tables."""

from thresher.runs.config import (
    ConfigError,
    check_choice,
    check_positive,
    check_range,
    config_to_dict,
    dump_yaml,
    flatten,
    load_config,
)
from thresher.runs.report import comparison_table, format_table
from thresher.runs.stats import PairedResult, Summary, format_mean_ci, paired_test, summarize
from thresher.runs.store import Run, RunLookupError, RunRecord, RunStore, atomic_write

__all__ = [
    "ConfigError", "check_choice", "check_positive", "check_range", "config_to_dict",
    "dump_yaml", "flatten", "load_config",
    "comparison_table", "format_table",
    "PairedResult", "Summary", "format_mean_ci", "paired_test", "summarize",
    "Run", "RunLookupError", "RunRecord", "RunStore", "atomic_write",
]
