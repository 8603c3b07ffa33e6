"""Benchmarks of mailsuite beside its peers; run them as ``python -m bench.<name>``."""
