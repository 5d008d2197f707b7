"""`ssogen judge`: a model compares chosen against rejected on a seeded sample, in both orders (the paper's accuracy
measure, docs/method.md)."""
