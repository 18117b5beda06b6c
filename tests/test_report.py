"""The results report (fundus2ffa/report.py) and the Li et al. experiment that feeds it.

The report is tested on run folders laid out as a Hydra multirun writes them (metrics.json,
config_resolved.yaml, .hydra/hydra.yaml, test_per_image.csv), with values chosen here so the expected
means and standard deviations are computed, not hard-coded.
"""

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import compose_run
from fundus2ffa.report import main

LI2020_COLUMNS = ["cyclegan", "pix2pix", "without_saliency", "without_patchgan", "proposed"]


_REPORTS: dict[str, dict] = {}


def write_run(folder: Path, experiment: str, data: str, seed: int, test: dict, per_image: list[dict] | None = None):
    if experiment not in _REPORTS:
        cfg = compose_run([f"experiment={experiment}", f"data={data}", "data.reader.root=/data"])
        _REPORTS[experiment] = OmegaConf.to_container(cfg.report, resolve=True)
    report = _REPORTS[experiment]
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"test": test, "val": test, "model": "fundus2ffa.models.PairedGAN"}))
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump({"seed": seed, "report": report}))
    (folder / ".hydra").mkdir()
    choices = {"experiment": experiment, "data": data, "model": "x"}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    if per_image:
        with (folder / "test_per_image.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(per_image[0]))
            writer.writeheader()
            writer.writerows(per_image)


def test_li2020_variants_are_the_papers_columns():
    expected = {
        "proposed": ("PairedGAN", "PatchGAN", {"gan": 1.0, "l1": 100.0, "perceptual": 0.001, "saliency": 1.0}),
        "without_saliency": ("PairedGAN", "PatchGAN", {"gan": 1.0, "l1": 100.0, "perceptual": 0.001, "saliency": 0.0}),
        "without_patchgan": ("PairedGAN", "ConvDiscriminator", {"gan": 1.0, "l1": 100.0, "perceptual": 0.001, "saliency": 1.0}),
        "pix2pix": ("PairedGAN", "PatchGAN", {"gan": 1.0, "l1": 100.0}),
        "cyclegan": ("CycleGAN", "PatchGAN", None),
    }
    for column, (model, discriminator, weights) in expected.items():
        cfg = compose_run([f"experiment=li2020/{column}", "data.reader.root=/data", "pretrained.vgg19=random"])
        assert cfg.report.column == column and list(cfg.report.columns) == LI2020_COLUMNS
        assert cfg.model._target_.endswith(model) and cfg.discriminator._target_.endswith(discriminator)
        assert cfg.model.schedule.constant_epochs == 100 and cfg.model.schedule.decay_epochs == 100
        assert cfg.model.optimizer_g.lr == 2e-4 and list(cfg.model.optimizer_g.betas) == [0.5, 0.999]
        assert cfg.data.batch_size == 1 and cfg.data.reader._target_.endswith("IsfahanMISP")
        assert list(cfg.data.train_transform.crop_size) == [288, 360]
        if weights is not None:
            assert {name: term.weight for name, term in cfg.loss.items()} == weights
    proposed = compose_run(["experiment=li2020", "data.reader.root=/data"])
    assert proposed.generator.block_final_activation and proposed.loss.perceptual.layers == ["relu5_4"]
    # the 256 px discriminator of "without PatchGAN" builds from the composed config
    cfg = compose_run(["experiment=li2020/without_patchgan", "data.reader.root=/data", "discriminator.ndf=2"])
    assert instantiate(cfg.discriminator).receptive_field == 256


def test_report_averages_seeds_and_sets_the_papers_numbers_beside_ours(tmp_path, capsys):
    root = tmp_path / "multirun"
    values = {"proposed": [25.0, 26.0, 27.5], "without_saliency": [24.0, 24.5, 23.0]}
    job = 0
    for column in ("without_saliency", "proposed"):
        for seed, psnr in enumerate(values[column]):
            rows = [
                {"id": "abnormal/1", "category": "abnormal", "psnr": psnr - 1, "ssim": 0.7},
                {"id": "normal/2", "category": "normal", "psnr": psnr + 1, "ssim": 0.9},
            ]
            write_run(root / str(job), f"li2020/{column}", "isfahan_li2020", seed, {"psnr": psnr, "ssim": 0.8, "count": 2.0}, rows)
            job += 1
    text = main([str(root)])
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines() if line.startswith("| ")}
    # columns in the paper's order, restricted to the columns run
    assert lines["metric"] == ["without_saliency", "proposed"]
    assert lines["runs"] == ["3", "3"]
    for i, column in enumerate(("without_saliency", "proposed")):
        mean, std = statistics.fmean(values[column]), statistics.stdev(values[column])
        assert lines["psnr"][i] == f"{mean:.2f} ± {std:.2f}"
        # per-category rows from test_per_image.csv
        assert lines["psnr/abnormal"][i] == f"{mean - 1:.2f} ± {std:.2f}"
    # the paper's Isfahan numbers (reference_spec 2.6) beside ours
    assert lines["psnr (paper)"] == ["24.99", "25.16"]
    assert lines["ssim (paper)"] == ["0.7668", "0.8268"]
    assert "Isfahan MISP" in text
    # csv: one record per dataset x metric x column x source
    records = list(csv.DictReader(main([str(root), "--format", "csv", "--metrics", "psnr"]).splitlines()))
    ours = [r for r in records if r["metric"] == "psnr" and r["source"] == "ours" and r["column"] == "proposed"]
    assert len(ours) == 1 and float(ours[0]["mean"]) == pytest.approx(statistics.fmean(values["proposed"]))
    assert {r["metric"] for r in records} == {"psnr", "psnr/abnormal", "psnr/normal"}


def test_report_without_runs_says_what_is_missing(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no run with 'test' metrics" in capsys.readouterr().err


def write_hydra_run(folder: Path, overrides: list[str], test: dict) -> None:
    """A run folder as `python -m fundus2ffa.run -m ...` writes it: .hydra/config.yaml (unresolved),
    overrides.yaml and hydra.yaml (group choices), metrics.json; the config composed for real."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fundus2ffa.config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=overrides, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    cfg.paths.output_dir = str(folder)  # differs per run, as a resolved path would: not a configuration
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (folder / "metrics.json").write_text(json.dumps({"test": test, "model": "fundus2ffa.models.PairedGAN"}))


def test_report_columns_are_configurations_not_class_names(tmp_path):
    """pix2pix, pix2pixhd and saliency_cgan (all PairedGAN) and a loss.l1.weight=10,100 sweep stay apart;
    the seeds of one configuration are averaged; a NaN FOV score is left out of its mean."""
    root = tmp_path / "multirun"
    configs = {
        "pix2pix (loss.l1.weight=10)": ["model=pix2pix", "loss.l1.weight=10"],
        "pix2pix (loss.l1.weight=100)": ["model=pix2pix", "loss.l1.weight=100"],
        "pix2pixhd": ["model=pix2pixhd"],
        "saliency_cgan": ["model=saliency_cgan", "pretrained.vgg19=random"],
    }
    psnr, job = {}, 0
    for offset, (label, overrides) in enumerate(configs.items()):
        psnr[label] = [20.0 + 2.5 * offset + 0.5 * seed for seed in (1, 2)]
        for seed, value in zip((1, 2), psnr[label]):
            fov = float("nan") if (offset, seed) == (0, 2) else value + 1.0
            write_hydra_run(root / str(job), [*overrides, f"seed={seed}"], {"psnr": value, "psnr_fov": fov, "count": 3.0})
            job += 1
    text = main([str(root)])
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines() if line.startswith("| ")}
    assert lines["metric"] == list(configs)
    assert lines["runs"] == ["2", "2", "2", "2"]
    for i, label in enumerate(configs):
        mean, std = statistics.fmean(psnr[label]), statistics.stdev(psnr[label])
        assert lines["psnr"][i] == f"{mean:.2f} ± {std:.2f}"
    assert lines["psnr_fov"][0] == f"{psnr['pix2pix (loss.l1.weight=10)'][0] + 1.0:.2f}"  # seed 2's NaN left out
    # the grouping keys are shown: the model choice and the swept override
    grouping = next(line for line in text.splitlines() if line.startswith("Each column is one configuration"))
    assert "columns differ in: model, loss.l1.weight, discriminator, generator (and " in grouping
    records = json.loads(main([str(root), "--format", "json", "--metrics", "psnr"]))
    by_column = {r["column"]: r for r in records}
    assert by_column["pix2pix (loss.l1.weight=100)"]["configuration"].startswith("model=pix2pix; loss.l1.weight=100")
    assert by_column["pix2pixhd"]["n"] == 2
    # --ignore merges configurations that differ only in ignored keys
    merged = json.loads(main([str(root), "--format", "json", "--metrics", "psnr", "--ignore", "loss.*"]))
    assert sorted(r["column"] for r in merged) == ["pix2pix", "pix2pixhd", "saliency_cgan"]
    assert next(r for r in merged if r["column"] == "pix2pix")["n"] == 4


def test_a_sweep_counts_its_jobs_and_its_report_draws_one_curve_per_configuration(tmp_path, capsys):
    """The real command line: a 2-job sweep says job 1/2 and 2/2 and ends naming the report command; the report
    then draws each configuration's validation PSNR per epoch (the mean of its history.csv) as one line."""
    import re

    from conftest import cli
    from fundus2ffa.plots import read_history

    sweep = tmp_path / "sweep"
    result = cli("-m", "debug=smoke", "data.reader.num_pairs=8", "data.image_size=32", "generator.num_downs=5",
                 "generator.ngf=4", "discriminator.ndf=4", "trainer.limit_train_batches=2", "callbacks.samples=null",
                 "trainer.max_epochs=2", "loss.l1.weight=10,100", f"hydra.sweep.dir={sweep}", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    jobs = re.findall(r"job (\d+)/(\d+): (\S+)", console)
    assert jobs == [("1", "2", "loss.l1.weight=10"), ("2", "2", "loss.l1.weight=100")]
    assert f"python -m fundus2ffa.report {sweep}" in console

    main([str(sweep), "--curves", str(tmp_path / "curves")])
    assert f"curves: {tmp_path / 'curves' / 'index.html'}" in capsys.readouterr().err
    svg = (tmp_path / "curves" / "synthetic_val_psnr.svg").read_text()
    for job, weight in ((0, 10), (1, 100)):
        history = read_history(sweep / str(job) / "history.csv")
        label = f"pix2pix (loss.l1.weight={weight})"
        match = re.search(rf'data-name="{re.escape(label)}" points="([^"]+)"', svg)
        assert match and len(match.group(1).split()) == len(history) == 2
        assert f"{label} (last {history[-1]['val/psnr']:.4g})" in svg
    assert 'src="synthetic_val_psnr.svg"' in (tmp_path / "curves" / "index.html").read_text()
