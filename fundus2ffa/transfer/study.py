"""One few-shot transfer study: every (init, mode, k, seed) of a downstream config, scored on one test set.

Writes ``results.csv`` (one row per run, rewritten atomically after each run so an interrupted study
keeps what it finished) and ``table.md`` (the few-shot tables, :mod:`fundus2ffa.transfer.report`) into
the run directory. All backbones and the data are checked before the first fit.
"""

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fundus2ffa.errors import ConfigError
from fundus2ffa.builders import build
from fundus2ffa.transfer.backbone import BackboneSource
from fundus2ffa.transfer.fewshot import few_shot_indices, parse_k, split_pool_test
from fundus2ffa.transfer.report import write_tables
from fundus2ffa.transfer.tasks import classify, retrieve, segment
from fundus2ffa.writers import write_csv

log = logging.getLogger(__name__)
TASKS = ("classification", "segmentation", "retrieval")


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


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
    out = Path(cfg.paths.output_dir)
    rows: list[dict] = []
    trainer_cfg = _plain(cfg.trainer)
    seeds = [int(s) for s in down.seeds]
    name = down.get("name") or task
    started = time.perf_counter()

    def record(row: dict) -> None:
        rows.append({"study": name, "task": task, **row})
        write_csv(out / "results.csv", rows)
        log.info("%s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()})

    if task == "retrieval":
        for init in inits:
            for query in down.queries:
                if query == "generated" and init == "imagenet":
                    continue
                for seed in seeds if init != "pretrained" else seeds[:1]:  # pretrained is deterministic
                    metrics = retrieve(source, init, data, query, trainer_cfg, seed, tuple(down.ks))
                    record({"init": init, "mode": f"zero_shot_{query}", "k": "zero_shot", "seed": seed, "n_train": 0, "n_test": len(data), **metrics})
    else:
        labels = data.labels.numpy() if task == "classification" else None
        pool, test_idx = split_pool_test(len(data), float(down.test_fraction), int(down.split_seed), labels, down.get("test_size"))
        test = data.subset(test_idx)
        settings = _plain(down.train)
        fit = classify if task == "classification" else segment
        shots = [parse_k(k) for k in down.shots]
        for init in inits:
            for mode in down.modes:
                for k in shots:
                    for seed in seeds:
                        train_idx = few_shot_indices(pool, k, seed, labels)
                        metrics = fit(source, init, data.subset(train_idx), test, mode, settings, trainer_cfg, seed)
                        record({"init": init, "mode": mode, "k": k, "seed": seed, "n_train": len(train_idx), "n_test": len(test_idx), **metrics})
    log.info("study %s: %d runs in %.0f s", name, len(rows), time.perf_counter() - started)
    write_tables([out / "results.csv"], out / "table.md")
    return rows
