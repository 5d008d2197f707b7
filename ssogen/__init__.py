"""ssogen: Self-Steering Optimization preference-data generator and trainer."""

__version__ = "0.1.0"
