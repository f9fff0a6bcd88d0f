"""Widgets of the dashboard: the heatmap grid, the cell detail panel, the curve chart,
the store banner."""
