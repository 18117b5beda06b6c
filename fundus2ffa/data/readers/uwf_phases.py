"""Reader of the ultra-widefield SLO + two-phase FA eyes (../shared/data/uwf_slo_fa_phases, MIT).

Layout (../shared/data/README.md):

    train/{N}.png     UWF-SLO pseudo-colour (red/green channels; blue near-empty), the model input
    train/{N}.1.png   early-phase UWF-FA (grey)
    train/{N}.2.png   late-phase UWF-FA (grey; leakage has grown)
    test/...          the same, held out

As still pairs the input is paired with one phase (``target``; late by default, the diagnostic frame of
Li et al. 2020, reference_spec section 2.1). :meth:`UWFPhases.eyes` gives both phases in temporal
order, a real two-time-point FFA "video" for Fundus2Video's knowledge mask (reference_spec 4.2).

The SLO image has a flat blue channel but clearly different red and green, so ``io.read_cf`` accepts it
as colour. The three images of an eye are only roughly registered, and the FA images carry a burned-in
annotation box: compute a field-of-view mask (``priors.fov``), never assume one.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from fundus2ffa.data.io import list_images
from fundus2ffa.data.readers.base import PairReader
from fundus2ffa.data.records import PairRecord
from fundus2ffa.errors import ConfigError, DataError

PHASES = ("early", "late")
SPLIT_FOLDERS = ("train", "test")
_SLO_NAME = re.compile(r"^(\d+)\.png$", re.IGNORECASE)


@dataclass(frozen=True)
class UWFEye:
    """One eye: its SLO image and its FA frames in temporal order (``phases`` names them)."""

    id: str
    split: str
    cf: Path
    frames: tuple[Path, ...]
    phases: tuple[str, ...] = PHASES


class UWFPhases(PairReader):
    """SLO -> FA pairs of the UWF phases data; ``split`` of each record is its folder (train/test).

    Args:
        root: folder holding ``train/`` and/or ``test/``.
        target: early | late, the FA phase paired with the SLO image for still-image models.
        allow_grey_cf, ffa_channel, resize_ffa_to_cf, bit_depth: see :class:`PairReader`.
    """

    def __init__(
        self,
        root: str | Path,
        target: str = "late",
        **options,
    ):
        super().__init__(**options)  # allow_grey_cf, ffa_channel, resize_ffa_to_cf, bit_depth, cache
        if target not in PHASES:
            raise ConfigError(f"data.reader.target must be one of {'|'.join(PHASES)}, got {target!r}.")
        self.root = Path(root)
        self.target = target

    def records(self) -> list[PairRecord]:
        frame = PHASES.index(self.target)
        return [
            PairRecord(id=eye.id, cf=eye.cf, ffa=eye.frames[frame], group=eye.id, split=eye.split)
            for eye in self.eyes()
        ]

    def eyes(self) -> list[UWFEye]:
        """Every eye, train folder first, by eye number: id ``<split>/<N>``, SLO path, [early, late] FA paths."""
        if not self.root.is_dir():
            raise DataError(
                f"UWF phases data folder not found: {self.root}. Set data.reader.root to the folder holding "
                "train/ and test/ (../shared/data/uwf_slo_fa_phases in this project)."
            )
        splits = [s for s in SPLIT_FOLDERS if (self.root / s).is_dir()]
        if not splits:
            raise DataError(
                f"no train/ or test/ folder in {self.root}; the UWF phases layout is <split>/N.png, "
                "<split>/N.1.png (early FA), <split>/N.2.png (late FA). Point data.reader.root at its top folder."
            )
        eyes = []
        for split in splits:
            folder = self.root / split
            names = {path.name.lower(): path for path in list_images(folder)}
            numbers = sorted((m.group(1) for name in names if (m := _SLO_NAME.match(name))), key=int)
            if not numbers:
                raise DataError(f"no SLO images named <N>.png in {folder}; each eye needs N.png, N.1.png and N.2.png.")
            for number in numbers:
                slo = names[f"{number}.png"]
                frames = []
                for phase_number, phase in enumerate(PHASES, start=1):
                    frame = names.get(f"{number}.{phase_number}.png")
                    if frame is None:
                        raise DataError(
                            f"{slo} has no {phase}-phase angiogram: {folder}/{number}.{phase_number}.png is missing. "
                            "Add it or remove the eye's files."
                        )
                    frames.append(frame)
                eyes.append(UWFEye(id=f"{split}/{number}", split=split, cf=slo, frames=tuple(frames)))
        return eyes
