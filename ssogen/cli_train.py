"""CLI commands of the training area (`ssogen train`); registered on the main app when imported."""
