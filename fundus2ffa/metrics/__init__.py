"""Image and video metrics; range conversions live in ``fundus2ffa.metrics.convert`` (one helper)."""

from fundus2ffa.metrics.convert import to_uint8, to_unit
from fundus2ffa.metrics.image import MetricTable, image_quality

__all__ = ["MetricTable", "image_quality", "to_uint8", "to_unit"]
