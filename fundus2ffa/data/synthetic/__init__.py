"""The procedural synthetic retina: paired CF/FFA eyes with FFA over time and ground-truth masks.

:func:`synthesize_eye` draws one eye (:class:`SyntheticEye`); :func:`synthesize_uwf_eye` its
ultra-widefield view (SLO pseudo-colour, eyelids and lashes, domain-randomised style; uwf.py);
:func:`export_video_csv` writes synthetic
FFA videos in the Fundus2Video CSV layout (reference_spec section 4.2). The still-image reader is
:class:`fundus2ffa.data.readers.synthetic.SyntheticPairs`.
"""

from fundus2ffa.data.synthetic.export import export_video_csv, phase_code
from fundus2ffa.data.synthetic.retina import (
    DEFAULT_TIMES,
    MASK_NAMES,
    PHASES,
    SyntheticEye,
    eye_seed,
    phase_of,
    synthesize_eye,
)

__all__ = [
    "DEFAULT_TIMES",
    "MASK_NAMES",
    "PHASES",
    "SyntheticEye",
    "export_video_csv",
    "eye_seed",
    "phase_code",
    "phase_of",
    "synthesize_eye",
]
