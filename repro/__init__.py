"""repro: reproduce LLM-pruning papers (NeuronAL, Lua-LLM, LoSA, MOSP, RestoreLCC) and their baselines."""

__version__ = "0.1.0"
