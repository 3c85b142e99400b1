"""Models: loading by hub id, local folder, GGUF or random init (`loading.py`, `tokenizers.py`) and the
architecture adapter that names each family's blocks, linears and true-sequential groups (`adapter.py`)."""
