"""Analysis of trained models and runs: curves, and later per-class metrics."""
