"""studiobot: an AI image studio that lives in chat."""

__version__ = "0.1.0"
