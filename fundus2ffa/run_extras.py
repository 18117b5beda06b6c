"""What a run does around training, in the habits of ashleve/lightning-hydra-template.

- :func:`print_config_tree`: the composed config as a rich tree at the start of training, always saved as
  ``<run>/config_tree.log`` (the template's ``print_config_tree``); ``task=test`` / ``predict`` print only the
  lines that matter (:func:`task_summary`: checkpoint, data, mode);
- :func:`quiet_library_logs`: Lightning's tips are dropped and its GPU/TPU/HPU lines shown once per process,
  also across the many trainers of transfer (the template's ``extras``);
- :func:`route_library_logs`: Lightning's log lines reach Hydra's handlers, so ``<run>/run.log`` holds
  the run's log (Lightning gives its logger a private console handler, and stops propagation, when it
  is imported before Hydra configures logging, which left run.log empty);
- :func:`log_config`: the resolved config, the tags and the parameter counts sent to every logger
  (W&B config, TensorBoard hparams, MLflow params, CSV hparams.yaml);
- :func:`optimized_metric`: the value ``main`` returns to a sweeper (Optuna: ``hparams_search=...``),
  always a validation metric: tuning on the test split would leak it into model selection;
- :func:`finish_run`: the results page (:mod:`fundus2ffa.results_page`) after metrics.json is written, and
  the metrics table (the model and the trivial baselines, :func:`metrics_table`) at the end of the console;
- :class:`RunHooks`: Hydra callbacks of every entry that composes ``hydra: default`` (``fundus2ffa.run``,
  ``fundus2ffa.transfer``): a run folder that already holds another run's files is refused before
  anything is written there (:func:`check_run_folder`), and a failed job's error is written to its
  run.log; an expected error (a :class:`~fundus2ffa.errors.Fundus2FFAError`: bad data, config or
  checkpoint) ends the process with ``error: <message>`` on stderr and status 1, without a traceback
  (``HYDRA_FULL_ERROR=1`` shows it).
"""

import logging
import os
import sys
import warnings
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from fundus2ffa.errors import ConfigError, Fundus2FFAError
from fundus2ffa.targets import factory
from fundus2ffa.writers import write_text

log = logging.getLogger("fundus2ffa")

TREE_ORDER = ("task", "tags", "data", "model", "generator", "discriminator", "loss", "trainer", "callbacks", "logger", "paths")
LIBRARY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


# Lightning's lines said once per process (a transfer study builds a trainer per fit) or never (tips)
ONCE_PREFIXES = ("GPU available", "TPU available", "HPU available", "IPU available", "LOCAL_RANK:")
DROPPED_MARKERS = ("\U0001f4a1 Tip", "litlogger", "litmodels")
LIBRARY_WARNINGS = (  # said by the libraries on every run, about their own code or by design here
    r".*isinstance\(treespec, LeafSpec\).*",
    # a test, or a resume into its new run folder, restores the checkpoint callback of another folder on purpose
    r"The dirpath has changed from.*",
)


class _Quiet(logging.Filter):
    """Drops Lightning's tips and repeats of its accelerator lines (one instance per process)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(marker in message for marker in DROPPED_MARKERS):
            return False
        if message.startswith(ONCE_PREFIXES):
            if message in self.seen:
                return False
            self.seen.add(message)
        return True


_QUIET = _Quiet()


def quiet_library_logs() -> None:
    """Install :class:`_Quiet` on Lightning's rank-zero loggers and ignore the libraries' own deprecation
    chatter (harmless when called again)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "lightning.fabric.accelerators.cuda"):
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)
    for pattern in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def route_library_logs() -> None:
    """Let Lightning's loggers propagate to the root logger once Hydra has configured it (run.log).

    Removes only the bare console handler Lightning added at import; harmless when called twice."""
    if not logging.getLogger().hasHandlers():
        return
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


def config_tree(cfg: DictConfig, resolve: bool = True):
    """A :class:`rich.tree.Tree` of ``cfg``: one branch per top-level key, the order of TREE_ORDER first."""
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in cfg] + [k for k in cfg if k not in TREE_ORDER]
    for key in keys:
        node = cfg[key]
        branch = tree.add(str(key), style="bold", guide_style="dim")
        if isinstance(node, DictConfig):
            text = OmegaConf.to_yaml(node, resolve=resolve)
        else:
            text = str(OmegaConf.to_container(OmegaConf.create({key: node}), resolve=resolve)[key]) if resolve else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    return tree


def print_config_tree(cfg: DictConfig, save_dir: str | Path | None = None, resolve: bool = True, show: bool = True) -> None:
    """Print the config tree to the console (``show``) and write it, without colour codes, to
    ``<save_dir>/config_tree.log``."""
    import rich
    from rich.console import Console

    tree = config_tree(cfg, resolve=resolve)
    if show:
        rich.print(tree)
    if save_dir is not None:
        import io

        buffer = io.StringIO()
        Console(file=buffer, width=120, no_color=True, color_system=None).print(tree)
        write_text(Path(save_dir) / "config_tree.log", buffer.getvalue())


def config_hparams(cfg: DictConfig, model=None) -> dict:
    """The resolved config, the tags and (with ``model``) its parameter counts, as plain containers.

    Hydra's own node is not part of ``cfg`` (it lives in HydraConfig); nothing here runs code."""
    params = OmegaConf.to_container(cfg, resolve=True)
    params["tags"] = list(cfg.get("tags") or [])
    if model is not None:
        params["model/params/total"] = sum(p.numel() for p in model.parameters())
        params["model/params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return params


def log_config(cfg: DictConfig, loggers: list, model=None) -> dict:
    """Send :func:`config_hparams` to every logger; returns what was sent.

    TensorBoard and CSV write ``hparams.yaml``, W&B fills the run's config, MLflow logs (flattened)
    params; tags also go to W&B's run tags when the logger has them in its config, and to MLflow as run tags
    (one tag per label, value ``true``: ``tags.baseline = "true"`` in MLflow's search), not as a param."""
    params = config_hparams(cfg, model)
    for logger in loggers:
        if type(logger).__name__ == "MLFlowLogger":
            logger.log_hyperparams({k: v for k, v in params.items() if k != "tags"})
            for tag in params.get("tags") or []:
                logger.experiment.set_tag(logger.run_id, str(tag), "true")
            continue
        logger.log_hyperparams(params)
    return params


def optimized_metric(cfg: DictConfig, results) -> float | None:
    """The value of ``cfg.optimized_metric`` (e.g. ``val/psnr``) in ``results``; None when nothing was trained.

    Only validation metrics are allowed: a sweeper that maximised a test metric would select on the test set."""
    name = cfg.get("optimized_metric")
    if not name or not isinstance(results, dict):
        return None
    stage, _, key = str(name).partition("/")
    if stage != "val" or not key:
        raise ConfigError(
            f"optimized_metric={name} is not a validation metric; sweeps must optimise val/<metric> "
            "(e.g. optimized_metric=val/psnr), never the test split"
        )
    values = results.get("val") or {}
    if not values:  # no validation split: nothing to optimise
        return None
    if key not in values:
        raise ConfigError(
            f"optimized_metric={name} was not logged; this run logged val/{', val/'.join(sorted(values)) or '(nothing)'}"
        )
    return float(values[key])


# the columns of the console's metrics table, in this order, where the run has them
TABLE_METRICS = ("psnr", "ssim", "psnr_fov", "ssim_fov", "vessel_dice", "leakage_dice", "lpips", "fid", "kid", "fvd")


def metrics_table(metrics: dict) -> str:
    """The summary of ``metrics.json`` as a plain-text table: this run's val and test rows, then each trivial
    baseline (the rows of the results page's summary, :func:`fundus2ffa.results_page.summary_rows`)."""
    from fundus2ffa.results_page import summary_rows

    rows = summary_rows(metrics)
    if not rows:
        return ""
    present = [k for k in TABLE_METRICS if any(isinstance(v.get(k), (int, float)) for _, v in rows)]
    width = max(len(label) for label, _ in rows)
    lines = [" " * width + "".join(f"{k:>14}" for k in present)]
    for label, values in rows:
        cells = "".join(f"{values[k]:>14.4g}" if isinstance(values.get(k), (int, float)) else f"{'':>14}" for k in present)
        lines.append(f"{label:<{width}}{cells}")
    return "\n".join(lines)


def finish_run(cfg: DictConfig, trainer) -> None:
    """After metrics.json: the results page of the test images and the metrics table (rank 0, when the run tested)."""
    if not trainer.is_global_zero:
        return
    out = Path(cfg.paths.output_dir)
    if (out / "test_per_image.csv").is_file() or (out / "results").is_dir():
        from fundus2ffa.results_page import write_results_page

        page = write_results_page(out)
        log.info("results page: %s", page)
    metrics_file = out / "metrics.json"
    if metrics_file.is_file():
        import json

        metrics = json.loads(metrics_file.read_text())
        table = metrics_table(metrics)
        if table:
            where = f"{metrics.get('checkpoint') or 'the weights in memory'} (epoch {metrics.get('epoch')})"
            log.info("metrics of %s (metrics.json; the baselines are trivial predictors, higher is better):\n%s", where, table)


def start_run(cfg: DictConfig) -> None:
    """At the start of ``main`` (rank 0): route Lightning's logs to run.log, quiet its tips, print (training) and
    save the config tree.

    A config that does not resolve yet (a ``???`` value) is shown unresolved; the checks that follow
    name the missing key."""
    route_library_logs()
    quiet_library_logs()
    if not _first_process():
        return
    try:
        save_dir = cfg.paths.output_dir
        OmegaConf.to_container(cfg, resolve=True)
        resolve = True
    except Exception:  # noqa: BLE001 - shown unresolved; check_config reports the problem
        save_dir, resolve = None, False
    # the whole tree (230 lines) only where a run is configured from it; test / predict say what matters in run()
    print_config_tree(cfg, save_dir=save_dir, resolve=resolve, show=cfg.get("task", "train") == "train" or not resolve)


@factory
def mlflow_logger(tracking_uri: str | None = None, **kwargs):
    """Lightning's MLFlowLogger; a local ``file:`` store is allowed explicitly.

    MLflow 3 keeps its file store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE``
    is set; a folder of runs beside ``outputs/`` is what a single researcher wants (no database to run),
    so a ``file:`` URI sets it (an existing value in the environment wins). Other URIs (``sqlite:``,
    ``http:``) are passed through untouched."""
    import os

    from lightning.pytorch.loggers import MLFlowLogger

    if tracking_uri and str(tracking_uri).startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(tracking_uri=tracking_uri, **kwargs)


# ----------------------------------------------------------------------------------------- run folders and errors
# what Hydra and start_run write into a run folder before ``run`` starts (ignored by a check made from ``run``)
HYDRA_FILES = (".hydra", "run.log", "config_tree.log")


def check_run_folder(folder: str | Path, cfg: DictConfig | None = None, what: str = "run folder", ignore=()) -> None:
    """Refuse to start in ``folder`` when it already holds files of another run: a new run there would
    replace its checkpoints, metrics and config. An empty or missing folder is fine, and so is a resume of
    that folder (``task=train`` with ``ckpt_path`` inside it). ``ignore``: names not counted (e.g.
    :data:`HYDRA_FILES`, for a check from inside the job, after Hydra wrote its own files)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    entries = sorted(p.name for p in folder.iterdir() if p.name not in ignore)
    if not entries:
        return
    ckpt = (cfg.get("ckpt_path") if cfg is not None else None) or None
    task = cfg.get("task") if cfg is not None else None
    if ckpt and task == "train" and folder.resolve() in Path(ckpt).resolve().parents:
        return
    shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
    last = folder / "checkpoints" / "last.ckpt"
    resume = f", or continue that run with ckpt_path={last}" if task == "train" and last.is_file() else ""
    raise ConfigError(
        f"{what} {folder} already holds files of another run ({shown}); a new run there would replace them, so "
        "nothing was written. Leave hydra.run.dir / hydra.sweep.dir / paths.output_dir at their defaults (a new "
        f"timestamped folder), or choose an empty folder{resume}."
    )


def _select(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an interpolation that does not resolve yet: nothing to check
        return None


def _first_process() -> bool:
    """False in the processes Lightning's DDP launcher starts for ranks above 0: they re-run the command line
    in the run folder that rank 0 made (LOCAL_RANK / RANK set), which is theirs too."""
    from lightning.fabric.utilities.rank_zero import _get_rank

    return (_get_rank() or 0) == 0


def _expected(exc) -> bool:
    return isinstance(exc, Fundus2FFAError) and not os.environ.get("HYDRA_FULL_ERROR") == "1"


def _refuse(exc: Fundus2FFAError) -> None:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)


def log_failure(exc: BaseException) -> None:
    """Write a failed job's error into the run's log files (run.log): the message of an expected error,
    the traceback of any other. The console is left to :class:`RunHooks` / Hydra (no line twice)."""
    expected = isinstance(exc, Fundus2FFAError)
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "run failed: %s: %s", (type(exc).__name__, exc), None,
    )
    if not expected:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


SWEEP_JOBS_ENV = "FUNDUS2FFA_SWEEP_JOBS"  # the job count, for launchers that run jobs in other processes


SWEPT_KEYS_ENV = "FUNDUS2FFA_SWEPT_KEYS"


def sweep_size(config: DictConfig) -> tuple[int | None, list[str]]:
    """How many jobs a ``-m`` sweep of ``config`` launches (the product of its comma / range sweeps, or the
    sweeper's ``n_trials``: Optuna; None when that cannot be told in advance, a glob) and the swept keys."""
    keys: list[str] = []
    count: int | None = 1
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        for override in OverridesParser.create().parse_overrides(list(_select(config, "hydra.overrides.task") or [])):
            if override.is_sweep_override():
                keys.append(override.key_or_group)
                count *= len(list(override.sweep_string_iterator()))
    except Exception:  # noqa: BLE001 - a sweep Hydra expands later (glob): no count
        count = None
    trials = _select(config, "hydra.sweeper.n_trials")
    if trials:
        count = int(trials)
        keys += [str(k) for k in (_select(config, "hydra.sweeper.params") or {})]
    return count, keys


class RunHooks(Callback):
    """Hydra callbacks (``hydra.callbacks.fundus2ffa`` in conf/hydra/default.yaml); module docstring.

    In a ``-m`` sweep each job starts with ``job i/n: <its overrides>`` (console and its run.log), and the
    sweep ends with where its folder is and the report command that compares its jobs."""

    def __init__(self):
        self._jobs: int | None = None
        self._swept: list[str] = []
        self._started = 0

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        folder = _select(config, "hydra.run.dir")
        if folder and _first_process():
            try:
                check_run_folder(folder, config)
            except ConfigError as exc:
                _refuse(exc)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        folder = _select(config, "hydra.sweep.dir")
        if folder and _first_process():
            try:
                check_run_folder(folder, None, what="sweep folder")
            except ConfigError as exc:
                _refuse(exc)
        self._jobs, self._swept = sweep_size(config)
        if self._jobs:
            os.environ[SWEEP_JOBS_ENV] = str(self._jobs)
        os.environ[SWEPT_KEYS_ENV] = ",".join(self._swept)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        folder = _select(config, "hydra.sweep.dir")
        if not folder or not _first_process():
            return
        done = len(list(Path(folder).glob("*/metrics.json"))) if Path(folder).is_dir() else 0
        message = (f"sweep finished: {done} job(s) with metrics in {folder}. Compare them: python -m fundus2ffa.report {folder} "
                   f"(add --curves {Path(folder) / 'curves'} for their training curves)")
        log.info(message)
        if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                   for h in logging.getLogger().handlers):
            print(message, flush=True)  # the job's logging is gone by now in some launchers

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        """``job i/n`` in a sweep; ``paths.output_dir`` set to another folder than Hydra's (nothing of this job
        is there yet) is refused."""
        if str(_select(config, "hydra.mode")) == "RunMode.MULTIRUN" and _first_process():
            number = _select(config, "hydra.job.num")
            total = self._jobs or (int(os.environ[SWEEP_JOBS_ENV]) if os.environ.get(SWEEP_JOBS_ENV, "").isdigit() else None)
            index = int(number) + 1 if number is not None else self._started + 1
            self._started += 1
            swept = set(os.environ.get(SWEPT_KEYS_ENV, "").split(",")) - {""}
            chosen = list(_select(config, "hydra.overrides.task") or [])
            shown = [o for o in chosen if o.split("=", 1)[0].lstrip("+~") in swept] or chosen
            overrides = " ".join(shown)
            log.info("job %d%s: %s (%s)", index, f"/{total}" if total else "", overrides or "(no overrides)",
                     _select(config, "hydra.runtime.output_dir"))
        out, hydra_dir = _select(config, "paths.output_dir"), _select(config, "hydra.runtime.output_dir")
        if out and hydra_dir and _first_process() and Path(out).resolve() != Path(hydra_dir).resolve():
            try:
                check_run_folder(out, config, what="paths.output_dir")
            except ConfigError as exc:
                log_failure(exc)
                _refuse(exc)

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.FAILED:
            log_failure(job_return._return_value)

    def on_run_end(self, config: DictConfig, job_return=None, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        if job_return is not None and job_return.status == JobStatus.FAILED and _expected(job_return._return_value):
            _refuse(job_return._return_value)
