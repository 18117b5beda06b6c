"""``python -m fundus2ffa.transfer``: the Hydra entry of downstream transfer (config ``conf/transfer.yaml``,
tasks in ``conf/downstream/``; ``--help`` lists them). Writes results.csv and table.md into the run directory
(outputs/transfer/runs/<time>), with a progress bar (a line per fit without a terminal) over the study's fits.

torch and Lightning are imported inside ``main``: ``--help`` and ``--cfg job`` need neither."""

import logging

import hydra
from omegaconf import DictConfig

from fundus2ffa.config import config_dir, register_resolvers

register_resolvers()
log = logging.getLogger("fundus2ffa.transfer")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="transfer")
def main(cfg: DictConfig) -> None:
    import torch

    from fundus2ffa.run_extras import quiet_library_logs, route_library_logs
    from fundus2ffa.transfer.study import run_study

    route_library_logs()
    quiet_library_logs()  # Lightning's tips and GPU/TPU lines: once, not once per fit
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))  # CPU runs on a shared machine: fewer threads spin less
    run_study(cfg)


if __name__ == "__main__":
    main()
