"""Offline benchmarks: suites of cases, runs executed in chunks on Celery, scorers, and the gate that
decides whether a fine-tuned version may roll out."""
