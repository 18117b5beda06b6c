"""The one sample model of stills and videos: a CF with T >= 1 FFA frames, masks and metadata.

A still pair is a one-frame video (issue 9): :class:`Record` lists what a reader found (paths or in-memory
ids) and :class:`Sample` holds decoded uint8 pixels. ``PairRecord`` / ``PairSample`` and ``VideoRecord`` /
``VideoFrame`` / ``VideoSample`` are the same types under the names the still and video paths used.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One FFA frame: ``path`` (None in memory), ``phase`` label after filtering/merging, ``order`` key."""

    path: Path | None
    phase: str = ""
    order: float = 0.0


@dataclass(frozen=True)
class Record:
    """One eye on disk (or in memory): a CF and its FFA frames in temporal order.

    id: unique, stable (splits, prediction file names, reports). group: the unit no split divides
    (patient or eye; default ``id``). cf: the CF path. frames: the FFA frames (one for a still pair).
    category: e.g. normal/abnormal (stratifies splits). split: train | val | test when the layout fixes it.
    masks: (name, path) ground-truth masks on the CF grid. affine: optional 2x3 CF -> FFA matrix (Isfahan
    alignment metadata); the reader warps the CF onto the FFA grid.
    """

    id: str
    group: str = ""
    cf: Path | None = None
    frames: tuple[Frame, ...] = ()
    category: str = ""
    split: str = ""
    masks: tuple[tuple[str, Path], ...] = ()
    affine: tuple | None = None

    @property
    def split_group(self) -> str:
        return self.group or self.id

    @property
    def phases(self) -> tuple[str, ...]:
        return tuple(frame.phase for frame in self.frames)

    @property
    def ffa(self) -> Path | None:
        """The (first) FFA path: the target of a still pair."""
        return self.frames[0].path if self.frames else None


def PairRecord(id: str, cf=None, ffa=None, category: str = "", group: str = "", affine=None, split: str = "") -> Record:  # noqa: N802
    """A still CF/FFA pair: a :class:`Record` with one frame (``ffa``)."""
    frames = (Frame(Path(ffa) if ffa is not None else None),) if ffa is not None else ()
    return Record(id=id, group=group, cf=cf, frames=frames, category=category, split=split, affine=affine)


@dataclass
class Sample:
    """Pixels of one eye (uint8, one H x W grid): ``cf`` H x W x 3 RGB, ``frames`` T x H x W grey.

    phases / order: per frame. masks: name -> H x W {0, 1} (``fov`` and ``knowledge_mask`` once the
    dataset has made them, plus the reader's ground truth). km_frames: 2 x H x W (early, late) when the
    knowledge mask comes from frames other than the first and last of ``frames``.
    """

    id: str
    cf: np.ndarray
    frames: np.ndarray
    phases: tuple[str, ...] = ("",)
    order: tuple[float, ...] = (0.0,)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    category: str = ""
    km_frames: np.ndarray | None = None

    @property
    def ffa(self) -> np.ndarray:
        """The (first) FFA frame, H x W: the target of a still pair."""
        return self.frames[0]


PairSample = VideoSample = Sample
VideoRecord = Record
VideoFrame = Frame
