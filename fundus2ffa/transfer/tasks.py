"""The three downstream tasks of reference_spec 4.9, each one call: train (few-shot) and score on a test set.

* :func:`classify`: encoder + GAP + linear head, ``linear_probe`` (frozen encoder; its pooled features
  are computed once and the head is trained on them) or ``finetune`` (everything trains).
* :func:`segment`: the whole generator with a K-class head (``finetune`` or ``frozen_encoder``), Dice + BCE;
  scored by Dice per image at threshold 0.5 (K = 1) or argmax.
* :func:`retrieve`: zero-shot, no training: cosine similarity of pooled encoder features of CF queries
  and FFA gallery images (``query: cf``), or of generated FFA (the generator's own translation of the CF,
  ``query: generated``) and FFA; Recall@1/5/10 and median rank.

Devices and precision come from the ``trainer`` config (a ``lightning.Trainer``); evaluation runs on the
trainer's device.
"""

import logging

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from fundus2ffa.errors import ConfigError
from fundus2ffa.metrics.retrieval import cosine_similarity_matrix, retrieval_metrics
from fundus2ffa.metrics.segmentation import dice_per_image
from fundus2ffa.transfer.backbone import BackboneSource, GeneratorEncoder, GeneratorSegmenter, adapt_input, input_channels
from fundus2ffa.transfer.module import Classifier, DownstreamModule
from fundus2ffa.transfer.readers import DownstreamSet

log = logging.getLogger(__name__)

CLASSIFICATION_MODES = ("linear_probe", "finetune")
SEGMENTATION_MODES = ("finetune", "frozen_encoder")


def make_trainer(trainer_cfg, max_steps: int) -> L.Trainer:
    """A quiet Lightning Trainer for one few-shot fit (no logs, checkpoints or progress bars)."""
    cfg = dict(trainer_cfg or {"_target_": "lightning.Trainer", "accelerator": "auto", "devices": 1})
    cfg.update(max_steps=int(max_steps), max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    cfg.setdefault("_target_", "lightning.Trainer")
    return instantiate(cfg)


def _device(trainer: L.Trainer) -> torch.device:
    return trainer.strategy.root_device


def _loader(tensors, batch_size: int, seed: int, steps: int) -> DataLoader:
    """``steps`` batches drawn with replacement in one epoch: with k = 1 a per-sample epoch would make
    every optimiser step an epoch, and Lightning's per-epoch overhead would dominate the fit."""
    dataset = TensorDataset(*tensors)
    batch_size = min(int(batch_size), len(dataset))
    sampler = RandomSampler(dataset, replacement=True, num_samples=int(steps) * batch_size, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, device: torch.device, batch_size: int = 16) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


# ------------------------------------------------------------------------------------------ classification
def classification_scores(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean per-class recall) and macro AUROC (torchmetrics)."""
    from torchmetrics.functional.classification import multiclass_auroc

    pred = logits.argmax(1)
    recalls = [float((pred[labels == c] == c).float().mean()) for c in range(num_classes) if (labels == c).any()]
    probs = torch.softmax(logits.float(), 1)
    if num_classes == 2:
        from torchmetrics.functional.classification import binary_auroc

        auroc = float(binary_auroc(probs[:, 1], labels))
    else:
        auroc = float(multiclass_auroc(probs, labels, num_classes=num_classes, average="macro"))
    return {"accuracy": float((pred == labels).float().mean()), "balanced_accuracy": sum(recalls) / len(recalls), "auroc": auroc}


def fit_classifier(encoder: nn.Module, train: DownstreamSet, mode: str, settings: dict, trainer_cfg, seed: int) -> tuple[Classifier, L.Trainer]:
    """Train encoder + GAP + linear head on ``train``.

    ``linear_probe``: the encoder is frozen (eval mode, no gradient); its pooled features are computed
    once, standardised with the training set's mean and std (``settings.standardise``, default true)
    and only the head is trained on them. ``finetune``: encoder and head train together.
    """
    if mode not in CLASSIFICATION_MODES:
        raise ConfigError(f"downstream.modes: {mode!r} is not a classification mode; use {'|'.join(CLASSIFICATION_MODES)}")
    L.seed_everything(seed, workers=True, verbose=False)
    model = Classifier(encoder, len(train.classes))
    trainer = make_trainer(trainer_cfg, settings["steps"])
    optim = {"lr": settings["lr"], "weight_decay": settings.get("weight_decay", 0.0)}
    if mode == "linear_probe":
        encoder.requires_grad_(False)
        encoder.to(_device(trainer)).eval()
        features = _batched(encoder.pooled, train.images, _device(trainer))
        if settings.get("standardise", True):
            model.feature_mean.copy_(features.mean(0))
            std = features.std(0, unbiased=False)
            model.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))  # constant channels stay unscaled
        features = model.standardise(features)
        module = DownstreamModule(model.head, "classification", hflip=0.0, **optim)
        trainer.fit(module, _loader((features, train.labels), settings["batch_size"], seed, settings["steps"]))
    else:
        module = DownstreamModule(model, "classification", hflip=settings.get("hflip", 0.5), **optim)
        trainer.fit(module, _loader((train.images, train.labels), settings["batch_size"], seed, settings["steps"]))
    return model, trainer


def classify(source: BackboneSource, init: str, train: DownstreamSet, test: DownstreamSet, mode: str, settings: dict,
             trainer_cfg, seed: int) -> dict[str, float]:
    """Train a classifier on ``train`` (few-shot) and score it on ``test``."""
    L.seed_everything(seed, workers=True, verbose=False)  # a random init depends on the seed
    model, trainer = fit_classifier(source.encoder(init), train, mode, settings, trainer_cfg, seed)
    device = _device(trainer)
    model.to(device).eval()
    return classification_scores(_batched(model, test.images, device), test.labels, len(train.classes))


# ------------------------------------------------------------------------------------------ segmentation
def predict_masks(net: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    logits = _batched(net, images, device, batch_size=8)
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def fit_segmenter(net: nn.Module, train: DownstreamSet, mode: str, settings: dict, trainer_cfg, seed: int) -> L.Trainer:
    """Train a segmentation net (``finetune``: everything; ``frozen_encoder``: decoder and head only)."""
    if mode not in SEGMENTATION_MODES:
        raise ConfigError(f"downstream.modes: {mode!r} is not a segmentation mode; use {'|'.join(SEGMENTATION_MODES)}")
    L.seed_everything(seed, workers=True, verbose=False)
    frozen = [net.encoder.layers if isinstance(net, GeneratorSegmenter) else net.encoder] if mode == "frozen_encoder" else []
    module = DownstreamModule(net, "segmentation", frozen=frozen, lr=settings["lr"], weight_decay=settings.get("weight_decay", 0.0),
                              hflip=settings.get("hflip", 0.5), vflip=settings.get("vflip", 0.0),
                              transpose=settings.get("transpose", 0.0), lr_schedule=settings.get("lr_schedule", "constant"),
                              loss=settings.get("loss"))
    trainer = make_trainer(trainer_cfg, settings["steps"])
    valid = train.fov if train.fov is not None else torch.ones_like(train.masks, dtype=torch.bool)
    trainer.fit(module, _loader((train.images, train.masks, valid), settings["batch_size"], seed, settings["steps"]))
    return trainer


def segmentation_scores(net: nn.Module, test: DownstreamSet, device, num_classes: int = 1) -> dict[str, float]:
    net.to(device).eval()
    pred = predict_masks(net, test.images, device)
    return {"dice": float(dice_per_image(pred, test.masks, test.fov, num_classes=max(2, num_classes)).mean())}


def segment(source: BackboneSource, init: str, train: DownstreamSet, test: DownstreamSet, mode: str, settings: dict,
            trainer_cfg, seed: int) -> dict[str, float]:
    """Fine-tune a segmentation net on ``train`` (few-shot images) and score Dice on ``test``."""
    L.seed_everything(seed, workers=True, verbose=False)  # a random init depends on the seed
    num_classes = int(settings.get("num_classes", 1))
    net = source.segmenter(init, num_classes)
    trainer = fit_segmenter(net, train, mode, settings, trainer_cfg, seed)
    return segmentation_scores(net, test, _device(trainer), num_classes)


# ------------------------------------------------------------------------------------------ retrieval
@torch.no_grad()
def generate_ffa(generator: nn.Module, cf: torch.Tensor) -> torch.Tensor:
    """The generator's FFA for a CF (N x 1 x H x W): a still image, or the mean of Fundus2Video's first window."""
    out = generator(adapt_input(cf, input_channels(generator)))
    out = out[0] if isinstance(out, tuple) else out
    return out.mean(1, keepdim=True)


def retrieve(source: BackboneSource, init: str, data: DownstreamSet, query: str, trainer_cfg, seed: int, ks=(1, 5, 10)) -> dict[str, float]:
    """Zero-shot CF -> FFA retrieval with pooled encoder features (cosine similarity)."""
    if query not in ("cf", "generated"):
        raise ConfigError(f"downstream.query must be cf or generated, got {query!r}")
    L.seed_everything(seed, workers=True, verbose=False)
    encoder = source.encoder(init)
    device = _device(make_trainer(trainer_cfg, 1))
    encoder.to(device).eval()
    queries = data.images
    if query == "generated":
        if not isinstance(encoder, GeneratorEncoder):
            raise ConfigError("downstream.query=generated needs a generator backbone (pretrained or random), not imagenet")
        queries = _batched(lambda x: generate_ffa(encoder.generator, x), data.images, device)
    q = _batched(encoder.pooled, queries, device)
    g = _batched(encoder.pooled, data.paired, device)
    return retrieval_metrics(cosine_similarity_matrix(q, g), ks)
