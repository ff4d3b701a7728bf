"""The benchmarks, in one place: ``train`` (ratio-ensemble training throughput), ``fit`` (the
unbinned fit), ``controlplane`` (database and controller at campaign scale) and ``launch`` (GCE
launcher against the fake Compute service). Run them as ``nsbi bench <name>``; each module
exposes ``add_arguments(parser)`` and ``run(args) -> int`` and writes JSON (docs/benchmarks.md).

Development tools, not production code: the wheel does not install this package, and
``nsbi bench`` imports it from the source checkout. Module level stays light (no JAX; NumPy and
SQLAlchemy at most): ``nsbi bench --help`` imports every module to list its options.
"""
