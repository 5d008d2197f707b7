"""`ssogen iterate`: the online loop (docs/method.md, "The online loop") as a chain of `generate`, `score`,
`stats`, `train` and `judge` subprocesses, resumable step by step, with a report across iterations."""
