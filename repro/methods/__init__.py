"""Scorers: which weights matter inside a layer (one module per method)."""
