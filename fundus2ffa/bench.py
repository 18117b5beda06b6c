"""Training-iteration benchmark: seconds per iteration, images/s, FLOPs per iteration, MFU, peak memory.

    python -m fundus2ffa.bench                         # pix2pix at 256 px, the foundation's target
    python -m fundus2ffa.bench model=saliency_cgan data.image_size=512 pretrained.vgg19=random
    python -m fundus2ffa.bench --iterations 30 --no-bare trainer=gpu
    python -m fundus2ffa.bench --no-bare data.image_size=512 pretrained.vgg19=random \
        --variant "model=fundus2angio" --variant "model=pix2pixhd"     # side by side, one process

MFU is achieved FLOP/s (counted FLOPs of one iteration / measured seconds per iteration) over the
machine's own peak, measured here as the best FLOP/s of a large square matmul in the training dtype.
The framework run is a real ``Trainer.fit`` (data loader and transforms, manual G/D steps, every loss,
logging to CSV), with the dataset's decode cache warm as in every epoch after the first; the bare run repeats the same generator/discriminator/loss computation in a plain PyTorch loop,
so the difference is what the framework adds.
"""

import argparse
import resource
import statistics
import tempfile
import time

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from fundus2ffa.callbacks.timing import IterationTimer
from fundus2ffa.config import HelpFormatter, config_dir, register_resolvers
from fundus2ffa.host_allocator import configure_host_allocator
from fundus2ffa.losses.base import LossInputs
from fundus2ffa.nets.blocks.matmul import configure_cpu_matmul
from fundus2ffa.builders import build
from fundus2ffa.writers import write_json

register_resolvers()


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048, seconds: float = 2.0) -> float:
    """Best FLOP/s of ``size`` x ``size`` matmuls over about ``seconds``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best, start = 0.0, time.perf_counter()
    torch.matmul(a, b)
    while time.perf_counter() - start < seconds:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t0))
    return best


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def compose_bench(overrides: list[str], out_dir: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=["logger=csv", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = out_dir
        cfg.callbacks = {}
        cfg.trainer.enable_checkpointing = False
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        cfg.trainer.enable_progress_bar = False
    return cfg


def framework_run(cfg, iterations: int, warmup: int) -> tuple[IterationTimer, torch.device]:
    """A real ``Trainer.fit`` of ``warmup + iterations`` (+2: one counted for FLOPs, one spare) batches."""
    configure_host_allocator(cfg.get("host_allocator"))  # as python -m fundus2ffa.run applies them
    configure_cpu_matmul(cfg.get("cpu_matmul"))
    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_train_batches = iterations + warmup + 2
        if "num_pairs" in cfg.data.get("reader", {}):
            cfg.data.reader.num_pairs = max(int(cfg.data.reader.num_pairs), 2 * (iterations + warmup + 2))
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    train = datamodule.datasets["train"]
    # decode/draw cache warm, as in every epoch after the first
    for index in range(min(len(train.records), cfg.trainer.limit_train_batches * int(cfg.data.batch_size))):
        train.draw(index, seed=0)
    model = build(cfg.model, "model", _recursive_=False)
    timer = IterationTimer(warmup=warmup)
    trainer = build(cfg.trainer, "trainer", callbacks=[timer], logger=[instantiate(cfg.logger.csv)])
    trainer.fit(model, datamodule=datamodule)
    return timer, model.device


def bare_run(cfg, iterations: int, warmup: int, device: torch.device) -> float:
    """The same PairedGAN iteration (D step then G step) as a plain PyTorch loop; seconds per iteration."""
    model = build(cfg.model, "model", _recursive_=False).to(device)
    if not hasattr(model, "discriminator") or not hasattr(model, "active_terms"):
        return float("nan")
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    cf, real = batch["cf"].to(device), batch["ffa"].to(device)
    G, D, losses = model.generator, model.discriminator, model.losses
    opt_g = model.make_optimizer(cfg.model.optimizer_g, G.parameters())  # the configured optimizers
    opt_d = model.make_optimizer(cfg.model.optimizer_d, D.parameters())
    for p in D.parameters():
        p.requires_grad_(True)
    times = []
    for step in range(iterations + warmup):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fake = G(cf)
        pred_real, pred_fake = D(torch.cat([cf, real], 1)), D(torch.cat([cf, fake.detach()], 1))
        terms = model.gan.discriminator_terms(pred_real, pred_fake)
        opt_d.zero_grad(set_to_none=True)
        (0.5 * (terms["real"] + terms["fake"])).backward()
        opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        inputs = LossInputs(cf=cf, real=real, fake=fake, pred_fake=D(torch.cat([cf, fake], 1)))
        if any(losses[n].needs_pred_real for n in model.active_terms):
            with torch.no_grad():
                inputs.pred_real = D(torch.cat([cf, real], 1))
        loss = sum(losses[n].weight * losses[n](inputs) for n in model.active_terms)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        for p in D.parameters():
            p.requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(overrides: list[str], iterations: int, warmup: int, bare: bool) -> dict:
    """Benchmark one configuration (see the module docstring for what is measured)."""
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = compose_bench(overrides, out_dir)
        precision = str(cfg.trainer.precision)
        dtype = torch.bfloat16 if "bf16" in precision else torch.float16 if precision.startswith("16") else torch.float32
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        timer, device = framework_run(cfg, iterations, warmup)
        peak_mem = peak_memory_mb(device)
        # The peak is the best of two windows, before and after the bare loop: on a shared virtual
        # machine one 2 s window varies by +-10 % (seen here: 153-186 GFLOP/s on 2 cores).
        peak = matmul_peak(device, dtype)
        bare_seconds = bare_run(cfg, max(5, iterations // 2), warmup, device) if bare else float("nan")
        peak = max(peak, matmul_peak(device, dtype))
    seconds = statistics.median(timer.times)
    flops = timer.flops or 0
    return {
        "model": cfg.model._target_,
        "generator": cfg.generator.get("_target_") if "generator" in cfg else None,
        "image_size": int(cfg.data.image_size),
        "batch_size": timer.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds_per_iteration": seconds,
        "images_per_second": timer.batch_size / seconds,
        "gflops_per_iteration": flops / 1e9,
        "achieved_gflops_per_second": flops / seconds / 1e9,
        "matmul_peak_gflops_per_second": peak / 1e9,
        "mfu": flops / seconds / peak,
        "peak_memory_mb": peak_mem,
        "bare_seconds_per_iteration": bare_seconds,
        "bare_mfu": flops / bare_seconds / peak if bare_seconds == bare_seconds else float("nan"),
        "iterations_timed": len(timer.times),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m fundus2ffa.bench", description=__doc__, formatter_class=HelpFormatter,
                                     epilog="example: python -m fundus2ffa.bench --iterations 10 model=pix2pix data.image_size=256")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=pix2pix data.image_size=256")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-bare", action="store_true", help="skip the plain-PyTorch comparison loop")
    parser.add_argument("--variant", action="append", default=[],
                        help="extra overrides of one configuration to compare, e.g. --variant 'model=pix2pixhd' (repeatable)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for the whole benchmark, peak included (default: torch's choice)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    variants = [v.split() for v in args.variant] or [[]]
    table = [measure(args.overrides + variant, args.iterations, args.warmup, not args.no_bare) for variant in variants]
    names = [" ".join(v) or "default" for v in variants]
    width = max(len(k) for k in table[0])
    if len(table) > 1:
        print(f"{'variant':<{width}}  " + "  ".join(f"{n:>24}" for n in names))
    for key in table[0]:
        cells = [r[key] for r in table]
        text = [f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells]
        print(f"{key:<{width}}  " + "  ".join(f"{t:>24}" for t in text))
    if args.json:
        write_json(args.json, dict(zip(names, table)), sort_keys=False)
    return table


if __name__ == "__main__":
    main()
