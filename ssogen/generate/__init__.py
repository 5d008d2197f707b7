"""Generation: library + queries -> requests -> engine -> records -> pairs -> dataset folder (`ssogen generate`)."""
