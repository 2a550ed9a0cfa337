"""multimix: label-efficient, multi-task chest X-ray analysis."""

__version__ = "0.1.0"
