"""headswap.analysis.sweeps: the zoo sweeps, each one function over every timm architecture.

``zoo_coverage_sweep`` (does every head kind work on every architecture: surgery.coverage),
``zoo_table_sweep`` (params and GMACs of each head: analysis.costs) and
``export_coverage_sweep`` (ONNX export and verification of a sample: analysis.export.coverage).
Each resumes from its JSONL file, runs in worker processes with a per-item time limit and writes
its report files, all through analysis.runtime.sweep; tools/zoo_coverage.py, zoo_table.py and
export_coverage.py parse the flags and call one of them.
"""

from .export_coverage import ExportCoverageSettings, export_coverage_sweep, export_pairs, run_order
from .zoo_coverage import ZooCoverageSettings, timm_max_sweep, zoo_coverage_sweep
from .zoo_table import COLUMNS, DEFAULT_HEADS, ZooTableSettings, columns, zoo_row, zoo_table_sweep

__all__ = ["COLUMNS", "DEFAULT_HEADS", "ExportCoverageSettings", "ZooCoverageSettings",
           "ZooTableSettings", "columns", "export_coverage_sweep", "export_pairs", "run_order",
           "timm_max_sweep", "zoo_coverage_sweep", "zoo_row", "zoo_table_sweep"]
