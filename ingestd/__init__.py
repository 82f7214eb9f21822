"""ingestd: a daemon that keeps a database of clean, deduplicated articles from feeds."""

__version__ = "0.1.0"
