"""Data: hub or local rows (`sources.py`), the papers' calibration samplers (`calibration.py`), perplexity test
streams (`perplexity.py`), multi-objective domains (`domains.py`) and instruction-tuning data (`instruct.py`)."""
