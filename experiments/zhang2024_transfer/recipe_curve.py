"""Test Dice of the default segmentation recipe along training, beside the top-hat baseline (issue 22).

    python experiments/zhang2024_transfer/recipe_curve.py [--size 256] [--ngf 8] [--lr 2e-2] [--steps 800] [--every 200]
        [--train-eyes 8] [--seed 0] [--lr-schedule cosine] [--hflip 0.5] [--vflip 0.5] [--transpose 0.5]

Random initialisation of a U-Net generator with a 1-channel logit head (transfer/backbone.py), trained on
8 held-out synthetic eyes (SyntheticEyes, seeds 900000-900007) with the recipe of
conf/downstream/vessel_segmentation.yaml (Dice + BCE inside the field of view, AdamW at lr 2e-2 with a
cosine to zero, batch 4, 800 steps, joint flips and transposes of image and mask: DownstreamModule's own
augmentation), scored every ``--every`` steps on 8 other eyes (Dice per image in the field of view, as
the study scores). The same loop as DownstreamModule, written out so the curve can be read without
running the study once per step count (the cosine is scheduled over ``--steps``). Prints the top-hat
threshold baseline fitted on the same 8 training eyes first. The old recipe: ``--lr 3e-3 --steps 400
--lr-schedule constant --vflip 0 --transpose 0``.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fundus2ffa.losses.dice_bce import DiceBCELoss  # noqa: E402
from fundus2ffa.metrics.segmentation import dice_per_image  # noqa: E402
from fundus2ffa.transfer.backbone import BackboneSource  # noqa: E402
from fundus2ffa.transfer.baselines import tophat_threshold  # noqa: E402
from fundus2ffa.transfer.module import LR_SCHEDULES, DownstreamModule  # noqa: E402
from fundus2ffa.transfer.readers import SyntheticEyes  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--train-eyes", type=int, default=8, help="training eyes (8 test eyes follow them)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch-drawing seed")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine")
    parser.add_argument("--hflip", type=float, default=0.5)
    parser.add_argument("--vflip", type=float, default=0.5)
    parser.add_argument("--transpose", type=float, default=0.5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = SyntheticEyes(num_eyes=args.train_eyes + 8, image_size=args.size).load()
    train, test = data.subset(range(args.train_eyes)), data.subset(range(args.train_eyes, args.train_eyes + 8))
    print("baseline: tophat threshold", tophat_threshold(train, test), flush=True)
    generator = {"_target_": "fundus2ffa.nets.generators.UNetGenerator", "in_channels": 3, "out_channels": 1,
                 "num_downs": max(5, args.size.bit_length() - 1), "ngf": args.ngf}
    net = BackboneSource(None, generator, None).segmenter("random", 1)
    loss, optimiser = DiceBCELoss(), torch.optim.AdamW(net.parameters(), args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, args.steps) if args.lr_schedule == "cosine" else None
    augment = DownstreamModule(net, "segmentation", hflip=args.hflip, vflip=args.vflip, transpose=args.transpose)._augment
    draw, start = torch.Generator().manual_seed(args.seed), time.time()

    def test_dice() -> float:
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(test.images[i : i + 4]) for i in range(0, len(test), 4)])
        net.train()
        return float(dice_per_image((logits[:, 0] > 0).long(), test.masks, test.fov).mean())

    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(train), (args.batch,), generator=draw)
        x, y, valid = augment([train.images[index], train.masks[index], train.fov[index]])
        total = loss(net(x), y, valid)["total"]
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        if schedule is not None:
            schedule.step()
        if step % args.every == 0:
            print(f"step {step}: loss {total.item():.3f}, test Dice {test_dice():.3f} ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
