"""Registration of raw CF/FFA pairs into the CF frame (issue 11): ``python -m fundus2ffa.register``.

estimate.py: the transform (vessel maps, keypoints, RANSAC, coarse-to-fine, plausibility checks);
outputs.py: warping, valid-overlap mask, QC image; pipeline.py: folders/manifests in, paired_folder
layout out; bench.py: accuracy and speed on real and synthetic images under known transforms.
"""

from fundus2ffa.registration.estimate import Estimate, RegistrationOptions, estimate_transform, register_images
from fundus2ffa.registration.pipeline import PipelineOptions, register_pairs

__all__ = ["Estimate", "PipelineOptions", "RegistrationOptions", "estimate_transform", "register_images", "register_pairs"]
