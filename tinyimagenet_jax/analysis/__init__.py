"""Analysis of trained models and runs: curves, tables, per-class metrics, ensembles, filters, t-SNE."""
