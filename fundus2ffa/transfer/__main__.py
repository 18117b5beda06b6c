"""``python -m fundus2ffa.transfer``: the Hydra entry of downstream transfer (config ``conf/transfer.yaml``,
tasks in ``conf/downstream/``). Writes results.csv and table.md into the run directory
(outputs/transfer/runs/<time>)."""

import logging

import hydra
import torch
from omegaconf import DictConfig

from fundus2ffa.config import config_dir, register_resolvers
from fundus2ffa.transfer.study import run_study

register_resolvers()
log = logging.getLogger("fundus2ffa.transfer")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="transfer")
def main(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))  # CPU runs on a shared machine: fewer threads spin less
    run_study(cfg)


if __name__ == "__main__":
    main()
