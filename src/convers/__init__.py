"""convers: a local-first voice companion with memory."""

__version__ = "0.1.0"
