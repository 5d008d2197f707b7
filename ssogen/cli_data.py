"""CLI commands that inspect and publish datasets (`score`, `stats`, `push-to-hub`); registered when imported."""
