"""Fundus2Video training benchmark: seconds per video and peak memory for T frames, and MFU of a window step.

    python experiments/zhang2024/bench_video.py                          # 256 px, T = 4, 8, 12, ngf 16, CPU
    python experiments/zhang2024/bench_video.py --ngf 64 --ndf 64 --device cuda --frames 4 8 12 16

Each frame count runs in a fresh process (so the process's peak RSS belongs to that T alone): the real
model config (``model=fundus2video``, random VGG weights, every loss term on) trains with Lightning's
``Trainer.fit`` on synthetic T-frame videos at ``--size`` px. Reported per T:

- ``s_per_video``: the median wall time of one training video (T windows; each a G+F and a D Adam step)
  after ``--warmup`` videos;
- ``s_per_window``: the median wall time of one window step;
- ``activation_mb``: the peak of the bytes autograd holds for backward (saved-tensor hooks), i.e. the
  live graph: flat in T when no graph outlives its window;
- ``peak_rss_mb`` (CPU) / ``peak_cuda_mb``: the process's peak memory;
- ``window_gflop``: FLOPs of one window step (``torch.utils.flop_counter.FlopCounterMode``: convolutions,
  matmuls, forward and backward of every network and loss), and ``mfu``: achieved FLOP/s of the median
  window over the machine's peak, measured in the same process as the best FLOP/s of a 2048 x 2048 fp32
  matmul (repeated; the best is taken, since other jobs may share the machine).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def matmul_peak(device, size: int = 2048, seconds: float = 3.0, repeats: int = 3) -> float:
    import torch

    from fundus2ffa.bench import matmul_peak as measure

    return max(measure(device, torch.float32, size, seconds / repeats) for _ in range(repeats))


def one_run(args) -> dict:
    """Train ``args.videos`` videos of ``args.frames`` frames in this process and measure."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader
    from torch.utils.flop_counter import FlopCounterMode

    from fundus2ffa.config import config_dir, register_resolvers
    from fundus2ffa.data.dataset import collate_videos
    from fundus2ffa.graph_memory import SavedTensorMeter

    register_resolvers()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = ["model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random",
                 f"generator.ngf={args.ngf}", f"discriminator.ndf={args.ndf}", *args.override]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=overrides)
    model = instantiate(OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True)), _recursive_=False)
    params = sum(p.numel() for p in model.generator.parameters())

    g = torch.Generator().manual_seed(0)
    size, frames = args.size, args.frames
    items = [{
        "cf": torch.rand(3, size, size, generator=g) * 2 - 1,
        "frames": torch.rand(frames, 1, size, size, generator=g) * 2 - 1,
        "knowledge_mask": (torch.rand(1, size, size, generator=g) > 0.8).float(),
        "fov": torch.ones(1, size, size), "id": f"v{i}", "category": "",
    } for i in range(args.warmup + args.videos)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    window_times, video_times, flops = [], [], {}
    meter = SavedTensorMeter()
    original = model.window_step

    def timed_window(*a, **k):
        sync()
        start = time.perf_counter()
        if "window" not in flops:
            with FlopCounterMode(display=False) as counter:
                out = original(*a, **k)
            flops["window"] = counter.get_total_flops()
            return out
        out = original(*a, **k)
        sync()
        window_times.append(time.perf_counter() - start)
        return out

    model.window_step = timed_window

    class VideoTimer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync()
            if batch_idx >= args.warmup:
                video_times.append(time.perf_counter() - self.start)

    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[VideoTimer()],
    )
    loader = DataLoader(items, batch_size=1, collate_fn=collate_videos)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        trainer.fit(model, loader)
    peak = matmul_peak(device)
    window = statistics.median(window_times)
    result = {
        "frames": frames, "size": size, "ngf": args.ngf, "ndf": args.ndf, "generator_params_m": params / 1e6,
        "device": str(device), "threads": torch.get_num_threads(),
        "s_per_video": statistics.median(video_times), "s_per_window": window,
        "activation_mb": meter.peak / 2**20,
        "window_gflop": flops["window"] / 1e9, "achieved_gflops": flops["window"] / window / 1e9,
        "peak_gflops": peak / 1e9, "mfu": flops["window"] / window / peak,
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return result


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8, 12])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=16, help="generator width (64: the paper's ~185 M parameters)")
    parser.add_argument("--ndf", type=int, default=16)
    parser.add_argument("--videos", type=int, default=2, help="timed videos per frame count")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        args.frames = args.frames[0]
        print("RESULT " + json.dumps(one_run(args)), flush=True)
        return []
    results = []
    for frames in args.frames:
        command = [sys.executable, __file__, "--single", "--frames", str(frames), "--size", str(args.size),
                   "--ngf", str(args.ngf), "--ndf", str(args.ndf), "--videos", str(args.videos),
                   "--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads)]
        if args.override:
            command += ["--override", *args.override]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with tempfile.TemporaryDirectory() as cwd:
            done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            raise SystemExit(f"benchmark for T={frames} failed (exit {done.returncode})")
        results.append(json.loads(lines[-1][len("RESULT "):]))
        r = results[-1]
        memory = f"peak RSS {r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else f"peak CUDA {r['peak_cuda_mb']:.0f} MB"
        print(f"T={frames:3d}  {r['s_per_video']:.2f} s/video  {r['s_per_window']:.3f} s/window  "
              f"graph {r['activation_mb']:.1f} MB  {memory}  {r['window_gflop']:.1f} GFLOP/window  "
              f"{r['achieved_gflops']:.1f} GFLOP/s  peak {r['peak_gflops']:.1f} GFLOP/s  MFU {100 * r['mfu']:.1f} %",
              flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
