"""Trivial baselines beside every transfer table (issue 22 item 4): what a number is worth.

On a real vessel set (20/20 images) every fine-tuned net, pretrained or not, stayed far below a
green-channel top-hat threshold fitted on the training images, and nothing in the table said so. Each
study now scores, on the same test set and with the same metric as the nets:

* segmentation: :func:`tophat_threshold`: a morphological top-hat of the image, thresholded. Colour
  fundus (3 channels): the black top-hat of the green channel (closing minus image: thin dark
  structures, vessels, stand out); a grey FFA (1 channel): the white top-hat (image minus opening:
  thin bright structures) or, with no top-hat, the plain intensity (bright areas: leakage). The disc
  diameter and the threshold are fitted on the k training images of each fit (the best mean training
  Dice over a grid), so the baseline sees exactly the labels the net sees;
* classification: :func:`majority_class`: every test image gets the most frequent class of the
  training images (ties: the first class); balanced accuracy 1/K, AUROC 0.5;
* retrieval: :func:`chance`: the expected metrics of a random ranking of N gallery items: Recall@K =
  min(K, N) / N, median rank (N + 1) / 2.
"""

import cv2
import numpy as np
import torch

from fundus2ffa.metrics.segmentation import dice_per_image

#: disc diameters of the top-hat, as fractions of the image side (0: no top-hat, the intensity itself;
#: FFA only). At 256 px: 5, 9, 17, 33 px (DRIVE vessels are 1-12 px wide at 565 px).
TOPHAT_DIAMETERS = (1 / 64, 1 / 32, 1 / 16, 1 / 8)
THRESHOLD_QUANTILES = np.linspace(0.50, 0.995, 60)  # candidate thresholds: quantiles of the training responses


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x C x H x W in [-1, 1] -> N x C x H x W uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def _diameter(fraction: float, side: int) -> int:
    if fraction == 0:
        return 0
    return max(3, int(round(fraction * side)) | 1)  # odd, at least 3 px


def tophat_response(images: torch.Tensor, diameter: int) -> np.ndarray:
    """N x H x W float32: black top-hat of the green channel (3-channel CF), white top-hat of a grey
    image (1 channel); ``diameter`` 0 on a grey image: its intensity."""
    pixels = _to_uint8(images)
    colour = pixels.shape[1] == 3
    out = []
    for image in pixels:
        grey = image[1] if colour else image[0]
        if diameter == 0:
            response = 255 - grey if colour else grey
        else:
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))
            response = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT if colour else cv2.MORPH_TOPHAT, disc)
        out.append(response.astype(np.float32))
    return np.stack(out)


def _valid(data) -> torch.Tensor:
    return data.fov if data.fov is not None else torch.ones_like(data.masks, dtype=torch.bool)


def fit_tophat_threshold(train) -> dict:
    """{'diameter': px, 'threshold': response level, 'train_dice': mean Dice} maximising the mean training
    Dice (binary masks: foreground = any non-zero class) over :data:`TOPHAT_DIAMETERS` x quantiles."""
    side = int(train.images.shape[-1])
    target = (train.masks > 0).long()
    valid = _valid(train)
    fractions = TOPHAT_DIAMETERS + ((0.0,) if train.images.shape[1] == 1 else ())
    best = {"diameter": 0, "threshold": float("inf"), "train_dice": -1.0}
    for diameter in dict.fromkeys(_diameter(f, side) for f in fractions):
        response = tophat_response(train.images, diameter)
        inside = response[valid.numpy()]
        for level in np.unique(np.quantile(inside, THRESHOLD_QUANTILES)):
            pred = torch.from_numpy(response > level).long()
            score = float(dice_per_image(pred, target, valid).mean())
            if score > best["train_dice"]:
                best = {"diameter": int(diameter), "threshold": float(level), "train_dice": score}
    return best


def tophat_threshold(train, test) -> dict[str, float]:
    """Test Dice of the top-hat threshold fitted on ``train`` (same Dice as the nets: per image, in the
    field of view), with the fitted diameter and threshold."""
    fitted = fit_tophat_threshold(train)
    pred = torch.from_numpy(tophat_response(test.images, fitted["diameter"]) > fitted["threshold"]).long()
    dice = float(dice_per_image(pred, (test.masks > 0).long(), _valid(test)).mean())
    return {"dice": dice, "tophat_px": float(fitted["diameter"]), "threshold": fitted["threshold"], "train_dice": fitted["train_dice"]}


def majority_class(train, test, num_classes: int) -> dict[str, float]:
    """Classification scores of predicting the training set's most frequent class for every test image."""
    from fundus2ffa.transfer.tasks import classification_scores

    counts = torch.bincount(train.labels, minlength=num_classes)
    majority = int(torch.argmax(counts))  # ties: the first class
    logits = torch.zeros(len(test.labels), num_classes)
    logits[:, majority] = 1.0
    return classification_scores(logits, test.labels, num_classes)


def chance(num_items: int, ks=(1, 5, 10)) -> dict[str, float]:
    """Expected retrieval metrics of a random ranking of ``num_items`` gallery items."""
    n = int(num_items)
    out = {f"recall@{k}": min(int(k), n) / n for k in ks}
    out["median_rank"] = (n + 1) / 2
    out["num_queries"] = float(n)
    return out
