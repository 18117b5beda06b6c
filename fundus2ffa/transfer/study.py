"""One few-shot transfer study: every (init, mode, k, seed) of a downstream config, scored on one test set.

Beside the nets, every table holds a trivial baseline scored on the same test set (init
``baseline: ...``, :mod:`fundus2ffa.transfer.baselines`): segmentation, a top-hat threshold fitted on
the same k training images; classification, the training images' majority class; retrieval, chance.

Writes ``results.csv`` (one row per run, rewritten atomically after each run so an interrupted study
keeps what it finished) and ``table.md`` (the few-shot tables, :mod:`fundus2ffa.transfer.report`) into
the run directory. All backbones and the data are checked before the first fit, including one forward
pass of each generator backbone at the data's image size (:func:`check_input_size`): a size the generator
cannot take (too small for its downsamplings, or not a multiple of its stride) is a ConfigError naming
``downstream.data.image_size``, not a PyTorch error in the middle of the study.
"""

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fundus2ffa.builders import build
from fundus2ffa.errors import ConfigError
from fundus2ffa.progress import Progress
from fundus2ffa.transfer.backbone import BackboneSource
from fundus2ffa.transfer.baselines import chance, majority_class, tophat_threshold
from fundus2ffa.transfer.fewshot import few_shot_indices, parse_k, split_pool_test
from fundus2ffa.transfer.report import write_tables
from fundus2ffa.transfer.tasks import classify, retrieve, segment
from fundus2ffa.writers import write_csv

log = logging.getLogger(__name__)
TASKS = ("classification", "segmentation", "retrieval")
FIT_KEYS = ("init", "mode", "k", "seed", "n_train", "n_test")  # what names a fit; the rest are its scores
BASELINES = {"segmentation": "baseline: tophat threshold", "classification": "baseline: majority class",
             "retrieval": "baseline: chance"}


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def check_input_size(source: BackboneSource, inits, task: str, images: torch.Tensor, num_classes: int = 1) -> None:
    """One forward pass (training mode, no gradient) of the generator backbone on two of the images."""
    init = next((i for i in inits if i != "imagenet"), None)  # pretrained and random share one architecture
    if init is None or images is None or not len(images):
        return
    net = source.segmenter(init, num_classes) if task == "segmentation" else source.encoder(init)
    size = tuple(images.shape[-2:])
    generator = type(net.generator).__name__
    fix = ("Use a larger downstream.data.image_size, a multiple of the generator's total stride (2 ** its downsamplings; "
           "e.g. 64, 128 or 256).")
    net.train()
    try:
        with torch.no_grad():
            out = net(images[:2])
    except (RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"downstream.data.image_size={size[-1]} does not fit the backbone's {generator} ({first}). {fix}"
        ) from None
    if task == "segmentation" and tuple(out.shape[-2:]) != size:
        raise ConfigError(
            f"downstream.data.image_size={size[-1]}: the backbone's {generator} turns {size[0]} x {size[1]} images into "
            f"{out.shape[-2]} x {out.shape[-1]} masks, so they cannot be scored against the ground truth. {fix}"
        )


def pool_and_test(data, down, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """The training pool and the test set: the data set's own train/test parts when it has them (e.g.
    DRIVE's training/ and test/ folders; ``downstream.test_fraction`` is then unused), else a
    ``test_fraction`` split drawn with ``split_seed``."""
    if getattr(data, "parts", None):
        pool, test = np.asarray(data.in_part("train")), np.asarray(data.in_part("test"))
        log.info("official split: %d training-pool and %d test items (downstream.test_fraction unused)", len(pool), len(test))
        return pool, test
    return split_pool_test(len(data), float(down.test_fraction), int(down.split_seed), labels, down.get("test_size"))


def run_study(cfg: DictConfig) -> list[dict]:
    """Run ``cfg.downstream`` with ``cfg.backbone``; returns the result rows."""
    down = cfg.downstream
    task = down.get("task")
    if task not in TASKS:
        raise ConfigError(f"downstream.task must be one of {'|'.join(TASKS)}, got {task!r}")
    inits = list(cfg.backbone.inits)
    if not inits:
        raise ConfigError("backbone.inits is empty; list at least one of pretrained, random, imagenet")
    source = BackboneSource(cfg.backbone.get("checkpoint"), _plain(cfg.backbone.get("generator")), _plain(cfg.backbone.get("imagenet")))
    source.check(inits)
    data = build(down.data, "downstream.data")  # a missing (???) key or bad argument is a ConfigError naming it
    data = data.load() if hasattr(data, "load") else data
    check_input_size(source, inits, task, getattr(data, "images", None), int((down.get("train") or {}).get("num_classes", 1) or 1))
    out = Path(cfg.paths.output_dir)
    rows: list[dict] = []
    trainer_cfg = _plain(cfg.trainer)
    seeds = [int(s) for s in down.seeds]
    name = down.get("name") or task
    started = time.perf_counter()

    def record(row: dict, progress: Progress | None = None) -> None:
        rows.append({"study": name, "task": task, **row})
        write_csv(out / "results.csv", rows)
        scores = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in FIT_KEYS and isinstance(v, float))
        if progress is not None:  # a fit (baselines take no time and get no bar step)
            progress.update(1, f"{row['init']} {row['mode']} k={row['k']} seed={row['seed']}: {scores}")

    # every fit is planned first, so the progress knows how many there are
    if task == "retrieval":
        for query in down.queries:
            record({"init": BASELINES[task], "mode": f"zero_shot_{query}", "k": "zero_shot", "seed": 0, "n_train": 0,
                    "n_test": len(data), **chance(len(data), tuple(down.ks))})
        plan = [(init, query, seed) for init in inits for query in down.queries if not (query == "generated" and init == "imagenet")
                for seed in (seeds if init != "pretrained" else seeds[:1])]  # pretrained is deterministic
        with Progress(len(plan), f"transfer {name}", "fits") as progress:
            for init, query, seed in plan:
                metrics = retrieve(source, init, data, query, trainer_cfg, seed, tuple(down.ks))
                record({"init": init, "mode": f"zero_shot_{query}", "k": "zero_shot", "seed": seed, "n_train": 0,
                        "n_test": len(data), **metrics}, progress)
    else:
        labels = data.labels.numpy() if task == "classification" else None
        pool, test_idx = pool_and_test(data, down, labels)
        test = data.subset(test_idx)
        settings = _plain(down.train)
        fit = classify if task == "classification" else segment
        shots = [parse_k(k) for k in down.shots]
        num_classes = len(data.classes) if task == "classification" else int(settings.get("num_classes", 1))
        for k in shots:  # the trivial baseline on the same training images as each fit
            for seed in seeds:
                train_idx = few_shot_indices(pool, k, seed, labels)
                train = data.subset(train_idx)
                if task == "classification":
                    metrics = majority_class(train, test, num_classes)
                elif num_classes == 1:
                    metrics = tophat_threshold(train, test)
                else:
                    continue  # K-class masks: no top-hat baseline (it separates foreground from background only)
                for mode in down.modes:
                    record({"init": BASELINES[task], "mode": mode, "k": k, "seed": seed, "n_train": len(train_idx),
                            "n_test": len(test_idx), **metrics})
        plan = [(init, mode, k, seed) for init in inits for mode in down.modes for k in shots for seed in seeds]
        with Progress(len(plan), f"transfer {name}", "fits") as progress:
            for init, mode, k, seed in plan:
                train_idx = few_shot_indices(pool, k, seed, labels)
                metrics = fit(source, init, data.subset(train_idx), test, mode, settings, trainer_cfg, seed)
                record({"init": init, "mode": mode, "k": k, "seed": seed, "n_train": len(train_idx), "n_test": len(test_idx),
                        **metrics}, progress)
    log.info("study %s: %d runs in %.0f s", name, len(rows), time.perf_counter() - started)
    write_tables([out / "results.csv"], out / "table.md")
    return rows
