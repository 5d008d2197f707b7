"""`ssogen iterate`: the online loop (SPEC §2.3) as a chain of `generate`, `score`, `stats`, `train` and `judge`
subprocesses, resumable step by step, with a report across iterations."""
