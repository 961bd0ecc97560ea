"""Data: sources by name, numpy transforms, grain pipelines."""
