"""Analysis files: a whole NSBI analysis in one YAML file, validated and turned into a campaign.

`load_analysis(path) -> Analysis`, `validate_analysis(path) -> list[Problem]`; see
`backend.analysis.spec` and docs/analysis.md. Importing this package does not import JAX.
"""

from backend.analysis.spec import Analysis, load_analysis, validate_analysis
from backend.analysis.spec_yaml import AnalysisError, Problem

__all__ = ["Analysis", "AnalysisError", "Problem", "load_analysis", "validate_analysis"]
