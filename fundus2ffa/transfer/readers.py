"""Readers of downstream data sets: labelled images, image + mask folders, CF/FFA pairs, synthetic eyes.

Every reader returns a :class:`DownstreamSet`: images N x C x S x S float in [-1, 1] (CF: 3 channels;
FFA: 1 grey channel), resized to ``image_size`` squares (INTER_AREA; masks INTER_NEAREST), plus labels
(classification), masks N x S x S int64 (segmentation) or paired FFA images (retrieval). Downstream sets
are small (few-shot), so they are decoded once and held in memory; every file is read before any
training starts, so a bad file fails first with a DataError that names it and the fix.

Layouts
-------
``LabelledImages`` (classification): a CSV with an image column and a label column (paths relative to
the CSV's folder or ``root``), or ``class_folders``: ``root/<class>/*.png`` (the layout of
../shared/data/ffa_frames/origin_data/01.phase_identification/{arterial_phase,venous_phase,non_ffa}).

``ImageMaskFolders`` (segmentation): an image folder, a mask folder and a name rule. Presets for the
public vessel sets (point ``root`` at the unpacked download), each with its train/test split
(``split: official``, the default: the study trains on the train part and scores on the test part;
``split: all`` pools every image and splits by ``test_fraction``):

=========  =======================  =========================  ==============================  ==========================
preset     images                   masks (first observer)     name rule                       official test part
=========  =======================  =========================  ==============================  ==========================
drive      {training,test}/images   {training,test}/1st_manual  21_training.tif -> 21_manual1.gif  the test/ folder (20 of 40)
chase_db1  *.jpg (one folder)       same folder, *_1stHO.png   Image_01L.jpg -> Image_01L_1stHO.png  Image_11L-14R (8 of 28) [1]
stare      stare-images/*.ppm       labels-ah/*.ah.ppm         im0001.ppm -> im0001.ah.ppm     the last 10 of the 20 labelled [1]
hrf        images/*.jpg|JPG         manual1/*.tif              01_dr.JPG -> 01_dr.tif          06-15 of each category (30 of 45) [1]
folders    {train,test}/images      {train,test}/masks         a mask with the image's stem    the test/ folder
=========  =======================  =========================  ==============================  ==========================

[1] CHASE_DB1, STARE and HRF ship no split; these are the conventions of the vessel-segmentation
literature (CHASE: first 20 train, last 8 test; STARE: first 10 / last 10 labelled images; HRF: the
first 5 of each category train), named here so a table says which it used. ``split: training`` or
``test`` reads one DRIVE (or ``folders``) folder only, split by ``test_fraction``.

``ImageMaskFolders(images=..., masks=..., mask_name="{stem}.png")`` covers any other layout (with
``{split}`` in ``images``/``masks`` and ``split_folders: {train: ..., test: ...}`` it has an official
split too); ``mask_name`` may use ``{stem}`` (the image name without suffix) and ``{id}`` (the first
group of ``id_regex`` on the stem), and ``*`` (``{stem}.*``: any suffix, exactly one file). Field-of-view
masks (``fov``): ``preset`` (the preset's own, DRIVE and HRF), null (score every pixel) or a folder.  Masks: ``binary`` (any non-zero pixel is foreground) or ``index`` (pixel
values / palette indices are class numbers, for K-class heads; e.g. the VOC-style lesion masks of
../shared/data/ffa_frames/origin_data/03.area_segmentation).

``paired_images`` (retrieval): any fundus2ffa pair reader (``fundus2ffa.data.readers``: PairedFolder,
UWFPhases, IsfahanMISP, SyntheticPairs) gives CF/FFA pairs.

``SyntheticEyes``: held-out synthetic retinas (fundus2ffa.data.synthetic) with ground truth: vessel
masks, lesion presence (any microaneurysm, haemorrhage, exudate or leakage), the late FFA frame.
"""

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from fundus2ffa.data.io import IMAGE_SUFFIXES, image_files, read_cf, read_grey
from fundus2ffa.data.synthetic import synthesize_eye
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.targets import factory

MODALITIES = ("cf", "ffa")
SUFFIXES = tuple(sorted(set(IMAGE_SUFFIXES) | {".gif", ".ppm", ".pgm"}))


@dataclass
class DownstreamSet:
    """Decoded downstream data; ``images`` N x C x S x S in [-1, 1]."""

    images: torch.Tensor
    ids: list[str]
    labels: torch.Tensor | None = None          # N int64 (classification)
    classes: list[str] = field(default_factory=list)
    masks: torch.Tensor | None = None           # N x S x S int64 (segmentation)
    fov: torch.Tensor | None = None             # N x S x S bool (where masks are scored), optional
    paired: torch.Tensor | None = None          # N x C x S x S in [-1, 1] (retrieval partners, FFA)
    parts: list[str] | None = None              # per item "train" | "test": the data set's own split (official)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index) -> "DownstreamSet":
        index = torch.as_tensor(list(index), dtype=torch.long)
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return DownstreamSet(pick(self.images), [self.ids[i] for i in index.tolist()], pick(self.labels), self.classes,
                             pick(self.masks), pick(self.fov), pick(self.paired),
                             None if self.parts is None else [self.parts[i] for i in index.tolist()])

    def in_part(self, name: str) -> list[int]:
        """Indices of the items of the data set's own ``name`` part (train | test); [] without parts."""
        return [i for i, p in enumerate(self.parts or []) if p == name]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W (grey) or H x W x 3 uint8 -> C x H x W float in [-1, 1] (reference_spec 1.1)."""
    array = image[..., None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div(127.5).sub(1.0)


def resize(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


WHERE = "downstream.data.root / csv / images"  # the settings naming downstream data, said in a missing-file fix


def read_image(path: Path, modality: str, size: int, allow_grey_cf: bool = False) -> torch.Tensor:
    if modality not in MODALITIES:
        raise ConfigError(f"downstream.data.modality must be cf or ffa, got {modality!r}")
    image = read_cf(path, allow_grey=allow_grey_cf, where=WHERE) if modality == "cf" else read_grey(path, where=WHERE)
    return to_tensor(resize(image, size))


def _check_size(size: int) -> int:
    size = int(size)
    if size < 16:
        raise ConfigError(f"downstream.data.image_size must be at least 16, got {size}")
    return size


# ----------------------------------------------------------------------------------------- classification
class LabelledImages:
    """Classification data: a labels CSV (``csv``, columns ``image_column`` and ``label_column``) or class
    folders (``root/<class>/<image>``). Labels are sorted class names mapped to 0..K-1.

    Args:
        modality: cf (colour fundus, read as RGB; grey refused unless allow_grey_cf) | ffa (grey).
    """

    def __init__(self, csv: str | None = None, root: str | None = None, image_column: str = "image",
                 label_column: str = "label", modality: str = "cf", image_size: int = 64,
                 allow_grey_cf: bool = False, classes: list[str] | None = None):
        if not csv and not root:
            raise ConfigError("downstream.data needs csv=<labels.csv> or root=<folder with one sub-folder per class>")
        self.csv, self.root = csv, root
        self.image_column, self.label_column = image_column, label_column
        self.modality, self.image_size, self.allow_grey_cf = modality, _check_size(image_size), allow_grey_cf
        self.classes = list(classes) if classes else None

    def entries(self) -> list[tuple[Path, str]]:
        if self.csv:
            return self._csv_entries()
        root = Path(self.root)
        if not root.is_dir():
            raise DataError(f"class folder root {root} not found; set downstream.data.root to the folder holding one sub-folder per class")
        entries = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if self.classes and folder.name not in self.classes:
                continue
            entries += [(p, folder.name) for p in image_files(folder.iterdir(), folder, SUFFIXES)]
        if not entries:
            raise DataError(f"no images in class sub-folders of {root}; the layout is {root}/<class>/<image>.png")
        return entries

    def _csv_entries(self) -> list[tuple[Path, str]]:
        path = Path(self.csv)
        if not path.is_file():
            raise DataError(f"labels CSV {path} not found; set downstream.data.csv to a CSV with columns {self.image_column},{self.label_column}")
        base = Path(self.root) if self.root else path.parent
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                columns = reader.fieldnames or []
                for column, key in ((self.image_column, "image_column"), (self.label_column, "label_column")):
                    if column not in columns:
                        raise DataError(
                            f"{path} has no column {column!r} (columns: {', '.join(columns)}); rename it or set downstream.data.{key}"
                        )
                rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(
                f"labels CSV {path} is not a text CSV ({type(exc).__name__}: {exc}); downstream.data.csv must name a UTF-8 "
                f"text file with columns {self.image_column},{self.label_column} (one image path and label per line), "
                "not an image, spreadsheet or archive."
            ) from None
        entries = []
        for line, row in enumerate(rows, start=2):
            image, label = (row.get(self.image_column) or "").strip(), (row.get(self.label_column) or "").strip()
            if not image or not label:
                raise DataError(f"{path} line {line}: empty {self.image_column!r} or {self.label_column!r}; fill it or remove the row")
            if self.classes and label not in self.classes:
                continue
            entries.append((base / image, label))
        if not entries:
            raise DataError(f"{path} lists no images")
        return entries

    def load(self) -> DownstreamSet:
        entries = self.entries()
        classes = self.classes or sorted({label for _, label in entries})
        if len(classes) < 2:
            raise DataError(f"classification needs at least 2 classes, found {classes} in {self.csv or self.root}")
        images = torch.stack([read_image(p, self.modality, self.image_size, self.allow_grey_cf) for p, _ in entries])
        labels = torch.tensor([classes.index(label) for _, label in entries], dtype=torch.long)
        return DownstreamSet(images, [str(p) for p, _ in entries], labels=labels, classes=classes)


# ----------------------------------------------------------------------------------------- segmentation
PRESETS = {
    "drive": {"images": "{split}/images", "masks": "{split}/1st_manual", "id_regex": r"^(\d+)_", "mask_name": "{id}_manual1.gif",
              "fov": "{split}/mask", "fov_name": "{stem}_mask.gif", "split_folders": {"train": "training", "test": "test"}},
    "chase_db1": {"images": ".", "masks": ".", "image_regex": r"^Image_\d+[LR]$", "mask_name": "{stem}_1stHO.png",
                  "test_regex": r"^Image_1[1-4][LR]$"},
    "stare": {"images": "stare-images", "masks": "labels-ah", "mask_name": "{stem}.ah.ppm",
              "test_regex": r"^im0(162|163|235|236|239|240|255|291|319|324)$"},
    "hrf": {"images": "images", "masks": "manual1", "mask_name": "{stem}.tif", "fov": "mask", "fov_name": "{stem}_mask.tif",
            "test_regex": r"^(0[6-9]|1[0-5])_(dr|g|h)$"},
    "folders": {"images": "{split}/images", "masks": "{split}/masks", "mask_name": "{stem}.*",
                "split_folders": {"train": "train", "test": "test"}},
}
SPLIT_MODES = ("official", "all")  # or a folder name that fills {split} (e.g. DRIVE's training | test)
PRESET_FOV = "preset"


class ImageMaskFolders:
    """Segmentation data: images and masks matched by a name rule (see the module docstring for presets).

    Args:
        root: the data set's top folder (presets) or the base of ``images``/``masks``.
        preset: drive | chase_db1 | stare | hrf | folders | null (then ``images``, ``masks``, ``mask_name``
            are needed).
        split: official (default; null means the same): the data set's own train and test parts, read
            from their folders (DRIVE ``training``/``test``, ``folders`` ``train``/``test``, or
            ``split_folders``) or by ``test_regex`` on the image stem (CHASE_DB1, STARE, HRF); a layout
            without a split then has no parts (the study splits by ``test_fraction``). all: every image,
            no parts. Any other value fills ``{split}`` in the folders (one folder, e.g. DRIVE's test).
        mask_mode: binary (mask > 0) | index (values are class numbers).
        fov: preset (default: the preset's field-of-view masks, DRIVE and HRF) | null (every pixel is
            scored) | a folder (``fov_name``); outside the masks pixels are not scored.
    """

    def __init__(self, root: str | None = None, preset: str | None = None, images: str | None = None, masks: str | None = None,
                 mask_name: str | None = None, id_regex: str | None = None, image_regex: str | None = None,
                 fov: str | None = PRESET_FOV, fov_name: str | None = None, split: str | None = "official",
                 split_folders: dict | None = None, test_regex: str | None = None,
                 mask_mode: str = "binary", modality: str = "cf", image_size: int = 64, allow_grey_cf: bool = False):
        settings = {}
        if preset:
            if preset not in PRESETS:
                raise ConfigError(f"downstream.data.preset must be one of {'|'.join(PRESETS)} or null, got {preset!r}")
            settings = dict(PRESETS[preset])
        given = {"images": images, "masks": masks, "mask_name": mask_name, "id_regex": id_regex, "image_regex": image_regex,
                 "fov_name": fov_name, "split_folders": split_folders, "test_regex": test_regex}
        settings.update({k: v for k, v in given.items() if v is not None})
        if fov != PRESET_FOV:  # null: no field-of-view masks, even where the preset has them
            settings["fov"] = fov
        for key in ("images", "masks", "mask_name"):
            if not settings.get(key):
                raise ConfigError(f"downstream.data.{key} is not set; give it or a preset ({'|'.join(PRESETS)})")
        if mask_mode not in ("binary", "index"):
            raise ConfigError(f"downstream.data.mask_mode must be binary or index, got {mask_mode!r}")
        self.split = "official" if split is None else str(split)
        folders = dict(settings.get("split_folders") or {})
        templated = any("{split}" in str(settings.get(k) or "") for k in ("images", "masks", "fov"))
        if templated and self.split in SPLIT_MODES and not folders:
            raise ConfigError(
                "downstream.data.images/masks hold {split}: give downstream.data.split_folders={train: ..., test: ...} "
                "or name one folder with downstream.data.split=<folder>"
            )
        # (part, folder that fills {split}) to read: part None = no official part
        if self.split == "official" and templated:
            self.folders = [("train", folders["train"]), ("test", folders["test"])]
        elif self.split == "all" and templated:
            self.folders = [(None, folders["train"]), (None, folders["test"])]
        else:
            self.folders = [(None, "" if self.split in SPLIT_MODES else self.split)]
        self.test_regex = re.compile(settings["test_regex"]) if settings.get("test_regex") and self.split == "official" and not templated else None
        self.base = Path(root) if root else Path(".")
        self.settings = settings
        self.mask_name, self.fov_name = settings["mask_name"], settings.get("fov_name")
        self.id_regex = re.compile(settings["id_regex"]) if settings.get("id_regex") else None
        self.image_regex = re.compile(settings["image_regex"]) if settings.get("image_regex") else None
        self.mask_mode, self.modality = mask_mode, modality
        self.image_size, self.allow_grey_cf = _check_size(image_size), allow_grey_cf
        first = self.folders[0][1]
        self.images, self.masks = self._folder("images", first), self._folder("masks", first)  # (one-folder layouts)
        self.fov = self._folder("fov", first)

    def _folder(self, key: str, split: str) -> Path | None:
        value = self.settings.get(key)
        return self.base / str(value).format(split=split) if value else None

    def _name(self, rule: str, image: Path) -> str:
        ident = image.stem
        if self.id_regex is not None:
            match = self.id_regex.search(image.stem)
            if not match:
                raise DataError(f"image {image} does not match downstream.data.id_regex {self.id_regex.pattern!r}; rename it or change the regex")
            ident = match.group(1)
        return rule.format(stem=image.stem, id=ident)

    def _partner(self, folder: Path, rule: str, image: Path) -> Path:
        """The file of ``folder`` that ``rule`` names for ``image`` (a ``*`` in the rule: exactly one match)."""
        name = self._name(rule, image)
        if "*" not in name:
            return folder / name
        found = sorted(p for p in folder.glob(name) if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
        if len(found) > 1:
            raise DataError(f"{len(found)} files in {folder} match {name!r} for {image}: {[p.name for p in found[:4]]}; keep one")
        return found[0] if found else folder / name

    def _folder_pairs(self, split: str) -> list[tuple[Path, Path, Path | None]]:
        images_dir, masks_dir, fov_dir = self._folder("images", split), self._folder("masks", split), self._folder("fov", split)
        if not images_dir.is_dir():
            fix = (" (split: official reads the data set's train and test folders; set downstream.data.split=<one folder> "
                   "or all to read what exists)") if self.split == "official" and split else ""
            raise DataError(f"image folder {images_dir} not found; set downstream.data.root (and preset or images=) to the unpacked data set{fix}")
        images = [p for p in image_files(images_dir.iterdir(), images_dir, SUFFIXES)
                  if p.is_file() and (self.image_regex.search(p.stem) if self.image_regex else True)]
        if self.image_regex is None and images_dir == masks_dir:
            raise ConfigError("images and masks share a folder: set downstream.data.image_regex so masks are not read as images")
        if not images:
            raise DataError(f"no images ({', '.join(SUFFIXES)}) in {images_dir}")
        found = []
        for image in images:
            mask = self._partner(masks_dir, self.mask_name, image)
            if not mask.is_file():
                raise DataError(
                    f"no mask for {image}: expected {mask} (downstream.data.mask_name={self.mask_name!r}). "
                    "Check the masks folder and the name rule, or remove the image."
                )
            fov = self._partner(fov_dir, self.fov_name, image) if fov_dir is not None and self.fov_name else None
            if fov is not None and not fov.is_file():
                raise DataError(
                    f"no field-of-view mask for {image}: expected {fov}; set downstream.data.fov=null to score every pixel"
                )
            found.append((image, mask, fov))
        return found

    def labelled_pairs(self) -> list[tuple[Path, Path, Path | None, str | None]]:
        """(image, mask, fov or None, part or None) of every image, in folder then name order."""
        found = []
        for part, split in self.folders:
            for image, mask, fov in self._folder_pairs(split):
                label = part
                if self.test_regex is not None:
                    label = "test" if self.test_regex.search(image.stem) else "train"
                found.append((image, mask, fov, label))
        labels = [p[3] for p in found]
        if self.split == "official" and any(labels) and not ({"train", "test"} <= set(labels)):
            missing = "test" if "test" not in labels else "train"
            raise DataError(
                f"the official split of {self.base} found no {missing} images ({len(found)} images read; "
                f"test rule: {self.test_regex.pattern if self.test_regex else dict(self.folders)}); set downstream.data.split=all "
                "to split every image by downstream.test_fraction instead"
            )
        return found

    def pairs(self) -> list[tuple[Path, Path, Path | None]]:
        return [p[:3] for p in self.labelled_pairs()]

    def _mask(self, path: Path) -> np.ndarray:
        from fundus2ffa.data.io import _open  # the reader's errors (missing / corrupt file) for masks too

        image = _open(path, where=WHERE)
        array = np.asarray(image) if image.mode == "P" else np.asarray(image.convert("L"))
        return (array > 0).astype(np.uint8) if self.mask_mode == "binary" else array.astype(np.uint8)

    def load(self) -> DownstreamSet:
        pairs = self.labelled_pairs()
        images, masks, fovs = [], [], []
        for image, mask, fov, _ in pairs:
            tensor = read_image(image, self.modality, self.image_size, self.allow_grey_cf)
            m = self._mask(mask)
            masks.append(torch.from_numpy(resize(m, self.image_size, nearest=True).astype(np.int64)))
            fovs.append(torch.from_numpy(resize(self._mask(fov), self.image_size, nearest=True) > 0) if fov else
                        torch.ones(self.image_size, self.image_size, dtype=torch.bool))
            images.append(tensor)
        parts = [p[3] for p in pairs]
        return DownstreamSet(torch.stack(images), [str(p[0]) for p in pairs], masks=torch.stack(masks), fov=torch.stack(fovs),
                             parts=parts if any(parts) else None)


# ----------------------------------------------------------------------------------------- retrieval
@factory
def paired_images(reader, image_size: int = 64, split: str | None = None) -> DownstreamSet:
    """CF/FFA pairs of a fundus2ffa pair reader (``records()`` + ``load()``); ``split`` keeps one folder split."""
    size = _check_size(image_size)
    records = [r for r in reader.records() if not split or r.split == split]
    if len(records) < 2:
        raise DataError(f"retrieval needs at least 2 CF/FFA pairs, the reader gave {len(records)}; check downstream.data")
    cfs, ffas = [], []
    for record in records:
        sample = reader.load(record)
        cfs.append(to_tensor(resize(sample.cf, size)))
        ffas.append(to_tensor(resize(sample.ffa, size)))
    return DownstreamSet(torch.stack(cfs), [r.id for r in records], paired=torch.stack(ffas))


# ----------------------------------------------------------------------------------------- synthetic
class SyntheticEyes:
    """Held-out synthetic eyes with ground truth (fundus2ffa.data.synthetic.synthesize_eye).

    Eye ``i`` is ``synthesize_eye(first_seed + i)``: choose ``first_seed`` far from the seeds a
    generator was trained on (the synthetic data configs draw ``eye_seed(seed, index) = seed * 100003 +
    index``), so downstream eyes are unseen. ``target``: vessel (segmentation masks) | lesion (label 1
    when any lesion pixel exists) | pairs (CF with the late FFA frame, for retrieval).

    ``render_size`` (default 2 x ``image_size``): the eye is drawn at that size and reduced to
    ``image_size`` (INTER_AREA); a pixel of the reduced mask is foreground when any pixel of its block
    is. Why: the synthetic vessel masks keep only vessels at least half a pixel wide, which leaves almost
    nothing at 64 px (0.2 % of pixels; 2 % at 128 px), while the vessels are still visible in the image.
    """

    def __init__(self, num_eyes: int = 32, first_seed: int = 900_000, image_size: int = 64, target: str = "vessel",
                 mask: str = "vessel", render_size: int | None = None):
        if target not in ("vessel", "lesion", "pairs"):
            raise ConfigError(f"downstream.data.target must be vessel, lesion or pairs, got {target!r}")
        self.num_eyes, self.first_seed, self.image_size = int(num_eyes), int(first_seed), _check_size(image_size)
        self.render_size = int(render_size) if render_size else 2 * self.image_size
        self.target, self.mask = target, mask

    def _mask(self, mask: np.ndarray) -> torch.Tensor:
        reduced = cv2.resize(mask.astype(np.float32), (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy((reduced > 0).astype(np.int64))

    def load(self) -> DownstreamSet:
        eyes = [synthesize_eye(self.first_seed + i, size=self.render_size) for i in range(self.num_eyes)]
        size = self.image_size
        images = torch.stack([to_tensor(resize(eye.cf, size)) for eye in eyes])
        ids = [f"synthetic/{eye.seed}" for eye in eyes]
        if self.target == "vessel":
            masks = torch.stack([self._mask(eye.masks[self.mask]) for eye in eyes])
            fov = torch.stack([torch.from_numpy(resize(eye.masks["fov"], size, nearest=True) > 0) for eye in eyes])
            return DownstreamSet(images, ids, masks=masks, fov=fov)
        if self.target == "lesion":
            labels = torch.tensor([int(eye.masks["lesion"].any()) for eye in eyes], dtype=torch.long)
            return DownstreamSet(images, ids, labels=labels, classes=["no_lesion", "lesion"])
        paired = torch.stack([to_tensor(resize(eye.late, size)) for eye in eyes])
        return DownstreamSet(images, ids, paired=paired)
