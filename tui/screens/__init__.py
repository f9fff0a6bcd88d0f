"""Screens of the dashboard, one per file: overview, heatmap, Spearman, help."""
