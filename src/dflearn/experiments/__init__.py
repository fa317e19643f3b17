"""Experiments: grids of runs with results tables, plots, TensorBoard, the papers' presets."""
from .grid import Grid, collect, run_grid, table, write_table

__all__ = ["Grid", "collect", "run_grid", "table", "write_table"]
