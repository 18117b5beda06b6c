"""What ``task=predict`` reads and where it writes, decided and checked before the model runs.

* Inputs (:func:`resolve_inputs`): ``predict.input_dir`` is a folder (its images, not recursive), a
  single image file, or a glob pattern (``/data/cf/*.jpg``, ``/data/**/*.png``; ``**`` recurses).
* Output names (:func:`output_names`): ``<stem>`` of each input; inputs whose stems collide (``x.png`` and
  ``x.jpg``, compared case-insensitively as on macOS/Windows filesystems) are all named
  ``<stem>__<extension>`` (``x__png``, ``x__jpg``), so the name never depends on which came first.
  Inputs that still collide (a glob over several folders holding ``a/x.png`` and ``b/x.png``) are refused,
  naming them: predict them into separate folders.
* The output folder (:func:`check_output_dir`) must be a folder this process can write: checked by
  creating and removing a probe file in it (or in its nearest existing parent, so nothing is created on
  failure), which also catches read-only mounts where permission bits say yes.
* Existing outputs (:func:`check_overwrite`) are refused unless ``predict.overwrite=true``, naming the
  files; an output that is one of the inputs (output folder = input folder) is refused even then.
"""

import glob
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from fundus2ffa.data.io import IMAGE_SUFFIXES, image_files, list_images, missing_reason
from fundus2ffa.errors import ConfigError, DataError

WHERE = "predict.input_dir"  # the setting the fix of a missing-file error names
GLOB_CHARS = ("*", "?", "[")
SHOWN = 8


def resolve_inputs(spec: str | Path) -> list[Path]:
    """The input images named by ``predict.input_dir``: a folder, an image file or a glob (sorted)."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return list_images(path, where=WHERE)
    if path.is_file() or path.is_symlink():
        reason = missing_reason(path, where=WHERE)
        if reason:
            raise DataError(reason)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(
                f"predict.input_dir={text} is not an image ({', '.join(IMAGE_SUFFIXES)}); give an image, a folder of "
                "images or a glob such as '/data/cf/*.png'."
            )
        return [path]
    if any(c in text for c in GLOB_CHARS):
        matches = sorted({Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)})
        broken = [p for p in matches if p.is_symlink() and not p.exists()]
        if broken:
            raise DataError(f"{missing_reason(broken[0], where=WHERE)} (matched by predict.input_dir={text})")
        images = image_files([p for p in matches if p.is_file()])  # macOS ._* files skipped, with a note
        if not images:
            raise DataError(
                f"predict.input_dir={text} matches no image ({', '.join(IMAGE_SUFFIXES)}; {len(matches)} other "
                "paths). Check the pattern (quote it so the shell does not expand it) or give a folder."
            )
        return images
    raise DataError(
        f"predict.input_dir={text} does not exist. Give a folder of CF images, one image file, or a glob such "
        "as '/data/cf/*.png'."
    )


def output_names(inputs: list[Path]) -> list[str]:
    """One output base name (no extension) per input, distinct and independent of input order (module notes)."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in inputs:
        by_stem[path.stem.lower()].append(path)
    names = []
    for path in inputs:
        if len(by_stem[path.stem.lower()]) == 1:
            names.append(path.stem)
        else:
            names.append(f"{path.stem}__{path.suffix.lstrip('.').lower()}")
    seen: dict[str, list[Path]] = defaultdict(list)
    for name, path in zip(names, inputs):
        seen[name.lower()].append(path)
    clashes = [paths for paths in seen.values() if len(paths) > 1]
    if clashes:
        shown = "; ".join(" and ".join(str(p) for p in paths) for paths in clashes[:SHOWN])
        raise DataError(
            f"inputs would write the same output file: {shown}. They share a name and an extension (from different "
            "folders); predict each folder separately (its own predict.output_dir) or rename them."
        )
    return names


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(out_dir: Path) -> None:
    """Fail now, naming ``predict.output_dir``, when outputs could not be written there (module notes)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"predict.output_dir={out_dir} is a file, not a folder; set predict.output_dir to a folder.")
    base = _nearest_existing(out_dir)
    if not base.is_dir():
        raise ConfigError(
            f"predict.output_dir={out_dir} cannot be created: {base} is a file. Set predict.output_dir to a folder path."
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".fundus2ffa-write-check-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "" if base == out_dir.absolute() else f" (its nearest existing parent {base})"
        raise ConfigError(
            f"predict.output_dir={out_dir} is not writable{where}: {exc.strerror or exc}. Set predict.output_dir to a "
            "folder you can write, or fix its permissions."
        ) from None


def check_overwrite(targets: list[Path], inputs: list[Path], overwrite: bool) -> None:
    """Refuse outputs that exist already (unless ``overwrite``) and outputs that are inputs (always)."""
    sources = {p.resolve() for p in inputs}
    own = [t for t in targets if t.exists() and t.resolve() in sources]
    if own:
        raise ConfigError(
            f"predict would overwrite its own input {own[0]} ({len(own)} in all): set predict.output_dir to another folder."
        )
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        shown = "\n  ".join(str(t) for t in existing[:SHOWN])
        more = f"\n  ... and {len(existing) - SHOWN} more" if len(existing) > SHOWN else ""
        raise ConfigError(
            f"{len(existing)} prediction output(s) exist already:\n  {shown}{more}\nNothing was written. Set "
            "predict.overwrite=true to replace them, or choose another predict.output_dir."
        )
