"""Allocators: how much sparsity each block / layer / row gets (one module per method)."""
