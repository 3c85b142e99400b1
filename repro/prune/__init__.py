"""The pruning core: the one block-by-block calibration engine (`engine.py`), input statistics (`stats.py`), pure
mask builders (`masks.py`) and the wiring allocation -> engine + scorer -> pattern (`pipeline.py`)."""
