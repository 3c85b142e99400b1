"""Records, the collector's first stage: run records read from disk (found, migrated, deduplicated) and what a
record says of itself (its key fields, config values, protocol fingerprint). Nothing here knows a paper."""
