"""Recovery after the mask is fixed (LoRA/DoRA, LoSA, RestoreLCC): one module per method."""
