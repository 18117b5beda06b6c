"""What the saliency loss adds to a saliency_cgan training iteration (Li et al. 2020 at 512 px, batch 1).

One iteration is PairedGAN's own discriminator step and generator step (forward and backward of G and
D with every loss: vanilla GAN, 100 L1, 0.001 VGG19 relu5_4, 1 L_sal), resnet (li_resnet) ngf 64, PatchGAN
ndf 64, on a 512 px synthetic CF/FFA pair. The same model runs with and without the saliency term,
alternating iteration by iteration so that a busy machine slows both alike; the target is at most +15 %.
VGG19 weights are random (``pretrained.vgg19=random``): the same cost as ImageNet weights.

    python experiments/li2020/bench_saliency.py                      # 4 measured pairs of iterations
    python experiments/li2020/bench_saliency.py --iterations 6 --size 512 --median-gradient detach

Prints CPU time (the process's, all threads; robust to other processes) and wall time per iteration,
medians over iterations, and the saliency loss alone (forward + backward at that size).
"""

import argparse
import json
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fundus2ffa.config import config_dir, register_resolvers
from fundus2ffa.data.synthetic.retina import synthesize_eye
from fundus2ffa.data.transforms import to_tensor_pm1
from fundus2ffa.losses.base import LossInputs


def build_model(size: int, median_gradient: str, width: int):
    register_resolvers()
    overrides = [
        "model=saliency_cgan",
        f"data.image_size={size}",
        "pretrained.vgg19=random",
        f"generator.ngf={width}",
        f"discriminator.ndf={width}",
        f"loss.saliency.median_gradient={median_gradient}",
    ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=overrides)
    model = instantiate(cfg.model, _recursive_=False)
    # PairedGAN's steps outside a Trainer: plain backward, no optimizer toggling, no logging
    model.manual_backward = lambda loss: loss.backward()
    model.toggle_optimizer = model.untoggle_optimizer = lambda opt: None
    model.log_terms = lambda *args, **kwargs: None
    return model


def batch(size: int) -> dict:
    eye = synthesize_eye(7, size=size, times=[300.0], abnormal=True)
    return {"cf": to_tensor_pm1(eye.cf)[None], "ffa": to_tensor_pm1(eye.frames[0])[None]}


def iteration(model, optimizers, data) -> tuple[float, float]:
    opt_g, opt_d = optimizers
    cpu, wall = time.process_time(), time.perf_counter()
    fake = model.generator(data["cf"])
    model._discriminator_step(opt_d, data["cf"], data["ffa"], fake, 1)
    model._generator_step(opt_g, data, fake, 1)
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--width", type=int, default=64, help="ngf and ndf")
    parser.add_argument("--iterations", type=int, default=4, help="measured iterations per arm")
    parser.add_argument("--median-gradient", default="selected", choices=["selected", "detach"])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = build_model(args.size, args.median_gradient, args.width)
    optimizers = model.configure_optimizers()[0]
    data = batch(args.size)
    with_terms = list(model.active_terms)
    without_terms = [name for name in with_terms if name != "saliency"]
    times = {"with": [], "without": []}
    for step in range(args.iterations + 1):  # the first pair warms up
        for arm, terms in (("with", with_terms), ("without", without_terms)):
            model.active_terms = terms
            cpu, wall = iteration(model, optimizers, data)
            if step:
                times[arm].append((cpu, wall))
            print(f"iteration {step} {arm:>7} saliency: cpu {cpu:.2f} s, wall {wall:.2f} s", flush=True)
    # the saliency term alone, forward and backward
    loss = model.losses["saliency"]
    alone = []
    for _ in range(args.iterations):
        fake = model.generator(data["cf"]).detach().requires_grad_(True)
        cpu, wall = time.process_time(), time.perf_counter()
        loss(LossInputs(cf=data["cf"], real=data["ffa"], fake=fake)).backward()
        alone.append((time.process_time() - cpu, time.perf_counter() - wall))
    result = {"settings": vars(args), "threads": torch.get_num_threads()}
    for arm, values in (*times.items(), ("saliency_alone", alone)):
        result[arm] = {
            "cpu_s": statistics.median(v[0] for v in values),
            "wall_s": statistics.median(v[1] for v in values),
        }
    for clock in ("cpu_s", "wall_s"):
        result[f"overhead_{clock[:-2]}_percent"] = 100.0 * (result["with"][clock] / result["without"][clock] - 1.0)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
