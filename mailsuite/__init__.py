"""mailsuite: a complete mail system for a home server, on Twisted."""

__version__ = "0.1.0"
