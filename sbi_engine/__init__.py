"""sbi_engine: the science of nsbi-workbench.

Density-ratio ensembles, their diagnostics, and the unbinned profile-likelihood fit, in pure
JAX/NumPy. Knows nothing of databases, clouds or web pages; usable from a notebook.

Importing the engine has no global side effects and does not import JAX: reading samples
(`sbi_engine.data`), the demo and the benchmark problems are NumPy only. The entry points that
compute with JAX (fits, training, ensemble evaluation, benchmarks) switch JAX to 64-bit types
themselves (`sbi_engine.precision.enable_float64`): the likelihood accumulates sums over
millions of events in float64, while training keeps its arrays float32 explicitly.
"""

__version__ = "0.1.0"
