"""CLI commands of the generation area (`ssogen generate`); registered on the main app when imported."""
