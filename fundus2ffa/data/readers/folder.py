"""A generic paired layout for user data: two folders matched by file stem, or a CSV manifest.

This is the layout to convert any private CF/FFA set into (e.g. the HRA set of Li et al. 2020,
reference_spec section 2.1, which is not public): either

    root/cf/<name>.<ext>    colour fundus photographs
    root/ffa/<name>.<ext>   the angiogram of the same eye, same <name>

or a CSV manifest with columns ``cf`` and ``ffa`` (paths relative to the CSV's folder) and optional
``id`` (default: the CF file name without extension), ``category`` (splits are stratified by it),
``group`` (patient or eye: no split divides it), ``split`` (train/val/test, to fix the split
instead of drawing it) and ``mask``.

An optional ``root/mask/<name>.png`` (or the manifest's ``mask`` column) is the valid region of the pair
in the CF frame, e.g. the overlap written by ``python -m fundus2ffa.register``: it reaches the model as
the ``valid`` mask, and losses and metrics ignore pixels outside it.

A CF folder that is also the FFA folder (``data.reader.ffa_dir=cf``), or two folders of byte-identical
files, would train the CF as its own target: refused. Pairs whose two files are byte-identical are
named in a warning (:func:`check_distinct_pairs`).
"""

import csv
import filecmp
import logging
from dataclasses import replace
from pathlib import Path

from fundus2ffa.data.io import ROOT_KEY, image_files, list_images, missing_reason
from fundus2ffa.data.readers.base import PairReader
from fundus2ffa.data.records import PairRecord
from fundus2ffa.data.splits import SPLITS
from fundus2ffa.errors import ConfigError, DataError

log = logging.getLogger(__name__)
MANIFEST_REQUIRED = ("cf", "ffa")
MANIFEST_OPTIONAL = ("id", "category", "group", "split", "mask")
MANIFEST_INFORMATIONAL = ("status",)  # read and ignored: python -m fundus2ffa.register's ok | identity


class PairedFolder(PairReader):
    """CF/FFA pairs from ``root/<cf_dir>`` + ``root/<ffa_dir>`` (matched by stem) or from a CSV manifest.

    Args:
        root: folder holding ``cf_dir`` and ``ffa_dir``; with a relative ``manifest``, the folder it is in.
        cf_dir, ffa_dir: names of the two sub-folders of ``root``.
        manifest: CSV file with columns cf, ffa [, id, category, group, split, mask]; when set, the
            sub-folders are not scanned. Rows name image paths relative to the CSV's own folder.
        mask_dir: sub-folder of ``root`` with one valid-region mask per pair (same name, any image
            suffix; nonzero = valid), used when it exists; null ignores it.
        allow_grey_cf, ffa_channel, resize_ffa_to_cf, bit_depth: see :class:`PairReader`.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        cf_dir: str = "cf",
        ffa_dir: str = "ffa",
        manifest: str | Path | None = None,
        mask_dir: str | None = "mask",
        **options,
    ):
        super().__init__(**options)  # allow_grey_cf, ffa_channel, resize_ffa_to_cf, bit_depth, cache
        if root is None and manifest is None:
            raise ConfigError(
                "PairedFolder needs data.reader.root (a folder with cf/ and ffa/ sub-folders) or "
                "data.reader.manifest (a CSV with cf and ffa columns); neither is set."
            )
        self.root = Path(root) if root is not None else None
        self.cf_dir, self.ffa_dir, self.mask_dir = cf_dir, ffa_dir, mask_dir
        self.manifest = None
        if manifest is not None:
            manifest = Path(manifest)
            self.manifest = self.root / manifest if self.root is not None and not manifest.is_absolute() else manifest

    def records(self) -> list[PairRecord]:
        if self.manifest is not None:
            return check_distinct_pairs(self._manifest_records(), f"pair manifest {self.manifest}", "check its cf and ffa columns")
        records = self._folder_records()
        fix = (
            f"data.reader.cf_dir={self.cf_dir} and data.reader.ffa_dir={self.ffa_dir} must name the folder of colour "
            "photographs and the folder of angiograms"
        )
        return check_distinct_pairs(records, f"{self.root / self.cf_dir} and {self.root / self.ffa_dir}", fix)

    def _folder_records(self) -> list[PairRecord]:
        if not self.root.is_dir():
            raise DataError(
                f"data folder not found: {self.root}. Set data.reader.root to the folder that holds "
                f"'{self.cf_dir}/' and '{self.ffa_dir}/'."
            )
        for sub in (self.cf_dir, self.ffa_dir):
            if not (self.root / sub).is_dir():
                raise DataError(
                    f"no '{sub}/' folder in {self.root}. The paired layout is root/{self.cf_dir}/* and "
                    f"root/{self.ffa_dir}/* matched by file name; rename the folders, set data.reader.cf_dir / "
                    "data.reader.ffa_dir, or list the pairs in a CSV (data.reader.manifest)."
                )
        if (self.root / self.cf_dir).resolve() == (self.root / self.ffa_dir).resolve():
            raise DataError(
                f"data.reader.cf_dir={self.cf_dir} and data.reader.ffa_dir={self.ffa_dir} are the same folder "
                f"({(self.root / self.cf_dir).resolve()}): every CF would be trained as its own target. Point "
                "data.reader.ffa_dir at the folder of angiograms."
            )
        records = stem_pairs(self.root / self.cf_dir, self.root / self.ffa_dir)
        masks = self.root / self.mask_dir if self.mask_dir else None
        if masks is None or not masks.is_dir():
            return records
        mask_by_stem = _by_stem(list_images(masks))
        missing = [r.id for r in records if r.id not in mask_by_stem]
        if missing:
            raise DataError(
                f"{masks} holds valid-region masks but none for pair(s) {missing[:5]}: add {masks}/<name>.png "
                "for every pair, or set data.reader.mask_dir=null to ignore the masks."
            )
        return [replace(r, masks=r.masks + (("valid", mask_by_stem[r.id]),)) for r in records]

    def _manifest_records(self) -> list[PairRecord]:
        manifest = self.manifest
        if not manifest.is_file():
            raise DataError(
                f"pair manifest not found: {manifest}. Set data.reader.manifest to a CSV file with columns "
                f"{', '.join(MANIFEST_REQUIRED)} (paths relative to the CSV's folder)."
            )
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            allowed = MANIFEST_REQUIRED + MANIFEST_OPTIONAL
            unknown = [c for c in columns if c not in allowed + MANIFEST_INFORMATIONAL]
            if unknown:
                raise DataError(
                    f"pair manifest {manifest} has unknown columns {unknown}; allowed columns are "
                    f"{', '.join(allowed)} (cf and ffa required). Rename or drop them."
                )
            missing = [c for c in MANIFEST_REQUIRED if c not in columns]
            if missing:
                raise DataError(
                    f"pair manifest {manifest} lacks the column(s) {missing}; its header must name cf and ffa "
                    f"(optional: {', '.join(MANIFEST_OPTIONAL)})."
                )
            rows = [(reader.line_num, row) for row in reader]
        records: list[PairRecord] = []
        seen: dict[str, int] = {}
        for line, cells in rows:
            where = f"pair manifest {manifest} line {line}"
            if None in cells:  # csv.DictReader's key for cells beyond the header
                raise DataError(f"{where} has more cells than the header has columns; remove the extra cells.")
            row = {column.strip(): (value or "").strip() for column, value in cells.items()}
            if not any(row.values()):
                continue
            paths = {}
            for column in MANIFEST_REQUIRED + ("mask",):
                if column == "mask" and not row.get(column):
                    continue
                if not row.get(column):
                    raise DataError(
                        f"{where}: empty '{column}' cell; give the image path relative to {manifest.parent}."
                    )
                path = Path(row[column])
                path = path if path.is_absolute() else manifest.parent / path
                if path.is_symlink() and not path.exists():
                    raise DataError(f"{where}: {column} {missing_reason(path)}")
                if not path.is_file():
                    raise DataError(
                        f"{where}: {column} image {path} not found. Paths are relative to the manifest's folder "
                        f"{manifest.parent}; fix the path or remove the row."
                    )
                paths[column] = path
            split = row.get("split", "")
            if split and split not in SPLITS:
                raise DataError(
                    f"{where}: split {split!r} is not one of {', '.join(SPLITS)}; fix it or leave it empty."
                )
            pair_id = row.get("id") or paths["cf"].stem
            if pair_id in seen:
                raise DataError(
                    f"{where}: pair id {pair_id!r} already used on line {seen[pair_id]}; ids (by default the CF "
                    "file name without extension) must be unique: fill the id column."
                )
            seen[pair_id] = line
            record = PairRecord(
                    id=pair_id,
                    cf=paths["cf"],
                    ffa=paths["ffa"],
                    category=row.get("category", ""),
                    group=row.get("group", ""),
                    split=split,
                )
            if "mask" in paths:
                record = replace(record, masks=record.masks + (("valid", paths["mask"]),))
            records.append(record)
        if not records:
            raise DataError(f"pair manifest {manifest} has no rows; add one row per CF/FFA pair.")
        return records


def stem_pairs(
    cf_folder: Path, ffa_folder: Path, videos: bool = False, where: tuple[str, str] = (ROOT_KEY, ROOT_KEY)
) -> list[PairRecord]:
    """Pairs of ``cf_folder/<name>.*`` and ``ffa_folder/<name>.*`` matched by file stem, sorted by name.

    ``videos``: an FFA partner may also be a sub-folder ``ffa_folder/<name>/`` of frames (its record's
    ``ffa`` is that folder). Every image must have its partner (DataError naming the missing file).
    ``where``: the settings naming the two folders, said in the fix of a missing or empty folder.
    """
    cf_folder, ffa_folder = Path(cf_folder), Path(ffa_folder)
    cf_by_stem = _by_stem(list_images(cf_folder, where[0]))
    folders = {p.name: p for p in sorted(ffa_folder.iterdir()) if p.is_dir()} if videos and ffa_folder.is_dir() else {}
    ffa_files = list_images(ffa_folder, where[1]) if not folders else [
        p for p in image_files(ffa_folder.iterdir(), ffa_folder) if p.is_file()
    ]
    ffa_by_stem = {**_by_stem(ffa_files), **folders}
    for stems, partners, partner_dir, kind in (
        (cf_by_stem, ffa_by_stem, ffa_folder, "CF"),
        (ffa_by_stem, cf_by_stem, cf_folder, "FFA"),
    ):
        for stem, path in stems.items():
            if stem not in partners:
                raise DataError(
                    f"{kind} {path} has no partner: expected {partner_dir}/{stem}.<png|jpg|...> "
                    "with the same file name. Add the partner image or remove this one."
                )
    return [PairRecord(id=stem, cf=cf_by_stem[stem], ffa=ffa_by_stem[stem]) for stem in sorted(cf_by_stem)]


def check_distinct_pairs(records: list[PairRecord], source: str, fix: str) -> list[PairRecord]:
    """Refuse pairs whose CF and FFA are all the same file or byte-identical (the CF would be its own target);
    warn, naming them, when some are. Sizes are compared first, so distinct pairs cost one stat each."""
    same = []
    for record in records:
        cf, ffa = Path(record.cf), Path(record.ffa)
        if not cf.is_file() or not ffa.is_file():
            continue  # a video folder or a missing file: the reader's checks name it
        try:
            if cf.resolve() == ffa.resolve() or (cf.stat().st_size == ffa.stat().st_size and filecmp.cmp(cf, ffa, shallow=False)):
                same.append(record.id)
        except OSError:
            continue
    if not same:
        return records
    shown = ", ".join(same[:5]) + (f" and {len(same) - 5} more" if len(same) > 5 else "")
    if len(same) == len(records):
        raise DataError(
            f"every pair of {source} has a CF and an FFA with the same content (byte-identical files: {shown}): "
            f"the CF would be trained as its own target. {fix[0].upper() + fix[1:]}."
        )
    log.warning(
        "%d of %d pairs of %s have byte-identical CF and FFA files (%s): those pairs teach the model to copy its input; "
        "%s, or remove those pairs.", len(same), len(records), source, shown, fix,
    )
    return records


def _by_stem(files: list[Path]) -> dict[str, Path]:
    """File stem -> path, refusing two images with one stem (a.png and a.jpg): the pairing would be ambiguous."""
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise DataError(
                f"{by_stem[path.stem]} and {path} share the name {path.stem!r}, so the pairing is ambiguous; "
                "remove or rename one of them."
            )
        by_stem[path.stem] = path
    return by_stem
