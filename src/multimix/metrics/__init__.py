"""Metrics a reviewer trusts: per source, with undefined values reported as null."""

from multimix.metrics.classification import classification_metrics
from multimix.metrics.segmentation import segmentation_metrics

__all__ = ["classification_metrics", "segmentation_metrics"]
