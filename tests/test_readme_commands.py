"""Every command of README.md and experiments/*/README.md works as written, in a shortened form.

The commands are read from the READMEs themselves, so a new or edited command is tested (or the test
fails until it is listed here). Shortening, the same for every command:

- placeholders become test data: ``/data/isfahan*`` and ``<export>`` a synthetic Isfahan export written
  by ``python -m fundus2ffa.data.synthetic export --layout isfahan``, ``/data/f2v/frames.csv`` a
  ``--layout video_csv`` export, ``<run>/checkpoints/last.ckpt`` (and ``.../last.ckpt``) the checkpoint
  of the shortened default run, ``/my/cf*`` a folder of two CF photographs of different sizes,
  ``/weights/vgg19-dcbb9e9d.pth`` ``random`` (no ImageNet file offline), ``<any>`` pix2pix / synthetic;
- ``debug=smoke`` and small sizes are appended (32-64 px, narrow networks); without a GPU
  ``trainer=gpu`` runs as ``trainer=cpu`` and ``trainer=ddp`` is composed as ``trainer=ddp_cpu``;
- ``-m`` sweeps: every job of the sweep is composed and checked; the first job runs;
- ``hydra/launcher=slurm``: composed and checked (no cluster here);
- ``host_allocator.library=...`` is dropped: its LD_PRELOAD cannot reach a run in this process
  (tests/test_host_allocator.py starts a run on tcmalloc through the command line).

Commands other than ``fundus2ffa.run`` are listed in ``OTHER`` with the test that runs them.
"""

import itertools
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, REPO, compose_run
from fundus2ffa.config import check_config
from fundus2ffa.run import run

READMES = [REPO / "README.md", *sorted((REPO / "experiments").glob("*/README.md"))]
COMMAND = re.compile(r"(?:OMP_NUM_THREADS=\d+ )?python3? -m fundus2ffa\.run\b[^\n`]*")

# The README commands that are not `fundus2ffa.run` training/test/predict commands, and where they are run.
OTHER = {
    "python -m fundus2ffa.run --help": "tests/test_run_extras.py::test_help_lists_launchers_and_cfg_resolve",
    "python -m fundus2ffa.run --cfg job [--resolve]": "tests/test_run_extras.py::test_help_lists_launchers_and_cfg_resolve",
    "python -m fundus2ffa.data.synthetic": "test_commands_run_in_short_form (the <export> folders)",
    "python -m fundus2ffa.report": "tests/test_report.py, tests/test_zhang2024.py",
    "python -m fundus2ffa.weights": "tests/test_weights.py; .ci/run fetches before the tests",
    "python -m fundus2ffa.bench": "tests/test_bench.py",
    "python -m fundus2ffa.host_allocator": "tests/test_host_allocator.py::test_a_run_started_with_tcmalloc_trains_on_it",
    "python -m fundus2ffa.app": "tests/test_browser.py::test_demo_upload_round_trip",
    "python -m fundus2ffa.results_page": "tests/test_results_page.py (write_results_page), tests/test_browser.py",
    "python -m fundus2ffa.transfer": "tests/transfer/ (its own commands and checks)",
    "python -m fundus2ffa.transfer.report": "tests/transfer/",
    "python -m fundus2ffa.register": "tests/registration/test_registration.py (the CLI on synthetic pairs)",
    "python -m fundus2ffa.registration.bench": "tests/registration/test_registration.py (the bench's cases, small)",
    "python -m fundus2ffa.export": "tests/inference/test_export.py (the command line and parity)",
    "python -m fundus2ffa.inference.bench": "benchmark only (README table); its predict paths: tests/inference/",
    "make": "make test is the suite itself; make train/smoke = python -m fundus2ffa.run [debug=smoke]",
}

TINY = {  # per data config: smoke-sized data
    "synthetic": ["data.reader.num_pairs=8"],
    "isfahan": ["data.num_workers=0", "data.train_repeats=1"],
    "isfahan_li2020": ["data.num_workers=0"],
    "isfahan_fundus2angio": [],  # the README's own smoke sizes
    "synthetic_video": ["data.reader.num_eyes=6", "data.image_size=32"],
    "fundus2video_csv": ["data.image_size=32"],
    "uwf_phases": ["data.image_size=64", "generator.num_downs=6"],
    "paired_folder": ["data.num_workers=0", "data.image_size=64", "data.train_transform.load_size=72"],
}


def readme_commands() -> list[tuple[str, str]]:
    """(README, command) for every `python -m fundus2ffa.run` command, continuation lines joined."""
    found = []
    for readme in READMES:
        text = readme.read_text().replace("\\\n", " ")
        for match in COMMAND.finditer(text):
            command = re.split(r"\s#\s|\s{2,}#", match.group(0))[0]
            found.append((readme.relative_to(REPO).as_posix(), " ".join(command.split())))
    return found


def _split_values(value: str) -> list[str]:
    """``a,b`` -> [a, b], leaving commas inside brackets alone."""
    parts, depth, current = [], 0, ""
    for ch in value:
        depth += ch in "[(" and 1 or 0
        depth -= ch in "])" and 1 or 0
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + [current]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    from fundus2ffa.data.synthetic.__main__ import main as synthetic_cli

    root = tmp_path_factory.mktemp("readme")
    assert synthetic_cli(["export", "--layout", "isfahan", str(root / "isfahan")]) == 0  # 8 eyes, 288 x 360
    assert synthetic_cli(["export", "--layout", "video_csv", str(root / "f2v"), "--count", "6", "--size", "32"]) == 0
    # OUT_DIR (the README's `fundus2ffa.register` output, trained with data=paired_folder): a paired-folder export
    assert synthetic_cli(["export", "--layout", "paired_folder", str(root / "registered"), "--count", "6", "--size", "64"]) == 0
    cf_dir = root / "cf"
    cf_dir.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(80, 60), (50, 70)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(cf_dir / f"eye{i}.jpg")
    return {"root": root, "isfahan": root / "isfahan", "csv": root / "f2v" / "data.csv", "cf": cf_dir,
            "registered": root / "registered"}


def shorten(command: str, fx: dict, ckpts: dict) -> tuple[list[list[str]], bool]:
    """(the override lists of every job, whether to run the first) for one README command."""
    tokens = shlex.split(command)
    tokens = [t for t in tokens if not t.startswith("OMP_NUM_THREADS=")][3:]  # drop python -m fundus2ffa.run
    multirun = "-m" in tokens
    tokens = [t for t in tokens if t != "-m"]
    import torch

    subs = {
        "/data/isfahan_misp": str(fx["isfahan"]), "/data/isfahan": str(fx["isfahan"]), "<export>": str(fx["isfahan"]),
        "/data/f2v/frames.csv": str(fx["csv"]), "/weights/vgg19-dcbb9e9d.pth": "random",
        "/my/cf_images": str(fx["cf"]), "/my/cf": str(fx["cf"]), "<any>": None,
        "OUT_DIR": str(fx["registered"]), "/my/pairs": str(fx["registered"]),
        "../shared/data": str(FIXTURES),  # the shipped downscaled copies of the shared real data (same layout)
    }
    out = []
    for token in tokens:
        key, _, value = token.partition("=")
        if value == "<any>" or key == "host_allocator.library":
            continue
        if key in ("ckpt_path", "init_from"):
            experiment = _experiment(tokens)
            value = str(ckpts[experiment or ("video" if any("fundus2video" in t for t in tokens) else "image")])
        for old, new in subs.items():
            if new is not None and old in value:
                value = value.replace(old, new)
        if key == "trainer" and value in ("gpu", "ddp") and not torch.cuda.is_available():
            value = {"gpu": "cpu", "ddp": "ddp_cpu"}[value]
        out.append(f"{key}={value}")
    runnable = not any(t.startswith("hydra/launcher=slurm") for t in out)
    out = [t for t in out if not t.startswith("hydra.launcher.") and not t.startswith("hydra/launcher=")
           and not t.startswith("hydra.sweep.dir=")]
    choices = [[f"{t.partition('=')[0]}={v}" for v in _split_values(t.partition("=")[2])] if multirun else [t] for t in out]
    jobs = [list(combo) for combo in itertools.product(*choices)] if choices else [[]]
    return jobs, runnable


def _smoke(job: list[str]) -> list[str]:
    """``debug=smoke`` and small sizes for the job's data config (the job's own overrides win)."""
    data = next((t.split("=", 1)[1] for t in job if t.startswith("data=")), None)
    experiment = next((t.split("=", 1)[1] for t in job if t.startswith("experiment=")), "")
    if data is None:
        data = {"kamran2020": "isfahan_fundus2angio", "li2020": "isfahan_li2020", "zhang2024": "fundus2video_csv"}.get(
            experiment.split("/")[0], "synthetic_video" if "model=fundus2video" in job else "synthetic")
    if "task=predict" in job:  # predict reads no data config: the model and its settings come from the checkpoint
        return ["debug=smoke", *job]
    extra = ["debug=smoke", *TINY.get(data, [])]
    if data.startswith("isfahan") and data != "isfahan_fundus2angio":
        extra += ["data.image_size=64"]
    if data == "isfahan_fundus2angio" and not any(t.startswith("data.reader.train_ids") for t in job):
        extra += ["data.reader.train_ids=[abnormal/1,abnormal/3,normal/2]", "data.reader.num_test=2", "data.image_size=128"]
    own = {t.split("=", 1)[0].lstrip("+") for t in job}
    return [t for t in extra if t.split("=", 1)[0] not in own] + job


FLAG_COMMANDS = ("python -m fundus2ffa.run --help", "python -m fundus2ffa.run --cfg job", "python -m fundus2ffa.run --cfg job --resolve")


def test_every_readme_command_is_covered():
    """Each `python -m fundus2ffa.<module>` and `make` command of the READMEs is run by some test."""
    modules = set()
    for readme in READMES:
        text = readme.read_text()
        modules |= {f"python -m fundus2ffa.{m}" for m in re.findall(r"python3? -m fundus2ffa\.([\w.]+)", text)}
        modules |= {"make" for _ in re.findall(r"(?m)^\s*make \w+|`make \w+", text)}
    modules.discard("python -m fundus2ffa.run")
    assert modules <= set(OTHER), modules - set(OTHER)
    assert len(readme_commands()) >= 15


def _experiment(job: list[str]) -> str:
    name = next((t.split("=", 1)[1] for t in job if t.startswith("experiment=")), "")
    return {"li2020": "li2020/proposed", "kamran2020": "kamran2020/fundus2angio", "zhang2024": "zhang2024/proposed"}.get(name, name)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_commands_run_in_short_form(fixtures, tmp_path):
    commands = list(dict.fromkeys(c for _, c in readme_commands() if c not in FLAG_COMMANDS))
    # training commands first: their checkpoints are the <run>/checkpoints/last.ckpt of the others
    uses_ckpt = [c for c in commands if "ckpt_path=" in c or "init_from=" in c]
    order = [c for c in commands if c not in uses_ckpt] + uses_ckpt
    ckpts: dict = {}
    ran, composed = [], []
    for index, command in enumerate(order):
        jobs, runnable = shorten(command, fixtures, ckpts)
        for number, job in enumerate(jobs):
            overrides = _smoke(job)
            out = tmp_path / f"c{index:02d}_{number}"
            cfg = compose_run(overrides, out)
            if number > 0 or not runnable:
                check_config(cfg)
                composed.append(command)
                continue
            if "samples" in cfg.callbacks and "video_format" in cfg.callbacks.samples:
                cfg.callbacks.samples.video_format = "none"
            result = run(cfg)
            ran.append(command)
            assert result, command
            if "ckpt_path=" not in command and "init_from=" not in command:
                key = _experiment(job) or ("video" if "fundus2video" in command else "image")
                ckpts.setdefault(key, out / "checkpoints" / "last.ckpt")
            if "task=predict" in command:
                assert len(result) == 2 and all(Path(p).exists() for p in result), command
    skipped = [c for c in order if c not in ran]
    assert all("hydra/launcher=slurm" in c for c in skipped), skipped
    print("ran:", *ran, "composed only (sweep jobs after the first, SLURM):", *sorted(set(composed)), sep="\n  ")
