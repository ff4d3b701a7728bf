"""Benchmarks with JSON output: ``train_bench`` (ratio-ensemble training) and ``fit_bench``."""
