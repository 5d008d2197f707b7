"""`ssogen judge`: a model compares chosen against rejected on a seeded sample, in both orders (SPEC §2.4)."""
