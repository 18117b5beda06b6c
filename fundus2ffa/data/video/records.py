"""What a video reader yields: eye metadata (:class:`VideoRecord`) and loaded pixels (:class:`VideoSample`).

One record is one FFA video, i.e. one eye (Fundus2Video's ``pid_eye``, reference_spec section 4.2), with
its colour fundus photograph and its FA frames in temporal order.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VideoFrame:
    """One FA frame of a video.

    path: image file (None for in-memory sources).
    phase: the phase label after the reader's phase filtering and merging (e.g. V, L; early, late).
    order: temporal order key (Fundus2Video's ``level_1``); frames of a record are sorted by it.
    """

    path: Path | None
    phase: str
    order: float


@dataclass(frozen=True)
class VideoRecord:
    """One eye's FFA video on disk (or in memory).

    id: the eye, unique and stable (``pid_eye``); used for splits, reports and predictions.
    group: the patient (``orgid``): no split divides a patient; defaults to ``id``.
    cf: the colour fundus photograph (``co_rigid``), None for in-memory sources.
    frames: the FA frames kept after phase filtering, sorted by ``order``.
    category: e.g. normal/abnormal (optional).
    split: train | val | test when the layout fixes it (UWF train/ and test/ folders, a CSV ``split``
        column); empty when the split is drawn.
    masks: (name, path) pairs of ground-truth masks on the CF grid (e.g. the synthetic ``leakage``).
    """

    id: str
    group: str = ""
    cf: Path | None = None
    frames: tuple[VideoFrame, ...] = ()
    category: str = ""
    split: str = ""
    masks: tuple[tuple[str, Path], ...] = ()

    @property
    def split_group(self) -> str:
        return self.group or self.id

    @property
    def phases(self) -> tuple[str, ...]:
        """The phase of every frame, in temporal order."""
        return tuple(frame.phase for frame in self.frames)


@dataclass
class VideoSample:
    """Pixels of one video (all uint8, one H x W grid).

    cf: H x W x 3 RGB. frames: T x H x W, the FA green channel, in temporal order.
    phases / order: per frame, as in the record (a padded frame repeats the last entry).
    masks: name -> H x W {0, 1}: ``fov`` and ``knowledge_mask`` once the dataset has made them, plus the
        reader's ground truth (e.g. ``leakage``).
    km_frames: 2 x H x W (early, late) when the knowledge mask comes from frames other than the first
        and last of ``frames`` (``km_frames: phase_early_late``); None otherwise.
    """

    id: str
    cf: np.ndarray
    frames: np.ndarray
    phases: tuple[str, ...]
    order: tuple[float, ...]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    category: str = ""
    km_frames: np.ndarray | None = None
