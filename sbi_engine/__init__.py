"""sbi_engine: the science of nsbi-workbench.

Density-ratio ensembles, their diagnostics, and the unbinned profile-likelihood fit, in pure
JAX/NumPy. Knows nothing of databases, clouds or web pages; usable from a notebook.

64-bit JAX types are enabled on import because the likelihood accumulates sums over millions
of events in float64. Training code keeps its arrays float32 explicitly (parameters, inputs,
random draws), so the networks run at single-precision speed.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
