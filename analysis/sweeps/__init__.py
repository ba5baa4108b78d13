"""headswap.analysis.sweeps: the zoo sweeps, each one function over every timm architecture.

``zoo_coverage_sweep`` (does every head kind work on every architecture: zoo_checks, its
report zoo_coverage_report), ``zoo_table_sweep`` (params and GMACs of each head: zoo_table) and
``export_coverage_sweep`` (ONNX export and verification of a sample: export_checks, its report
export_coverage_report). Each resumes from its JSONL file, runs in worker processes with a
per-item time limit and writes its report files, all through analysis.runtime.zoo_sweep;
tools/zoo_coverage.py, zoo_table.py and export_coverage.py parse the flags and call one of them.
"""

from .export_coverage import ExportCoverageSettings, export_coverage_sweep, export_pairs, run_order
from .zoo_coverage import ZooCoverageSettings, timm_max_sweep, zoo_coverage_sweep
from .zoo_table import COLUMNS, DEFAULT_HEADS, ZooTableSettings, columns, zoo_row, zoo_table_sweep

__all__ = ["COLUMNS", "DEFAULT_HEADS", "ExportCoverageSettings", "ZooCoverageSettings",
           "ZooTableSettings", "columns", "export_coverage_sweep", "export_pairs", "run_order",
           "timm_max_sweep", "zoo_coverage_sweep", "zoo_row", "zoo_table_sweep"]
