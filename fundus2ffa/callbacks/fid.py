"""FID and KID of the generated vs the real FFA over a whole evaluation set (reference_spec 3.6, 6.2).

Per-image metrics (PSNR, SSIM) live in the model's evaluation; FID and KID are set-level, so this
callback collects Inception features of every evaluated image and logs ``<stage>/fid``, ``<stage>/kid``
and ``<stage>/kid_std`` at the end of the epoch (they land in the run's metrics.json, beside PSNR/SSIM).

    python -m fundus2ffa.run callbacks=fid ...          # the default callbacks plus this one
    python -m fundus2ffa.run experiment=kamran2020 ...  # the Fundus2Angio table uses it

The generated image is taken from the test/validation step's output ``{"fake": ...}`` when the model
returns it, else recomputed with ``pl_module.translate(batch["cf"])``.

DDP: each rank extracts features of its own share; at epoch end the features are all-gathered with the
sample ids, and duplicates (the DistributedSampler pads the last batch with repeated samples) are
dropped by id, so the result equals the single-process one. Every rank computes the same value.

The Inception network is loaded on first use (so composing a config needs no weights) and moved to the
module's device; it is kept out of the LightningModule, so checkpoints never carry it.

Realism references (issue 22, metrics/realism.py; set by ``fundus2ffa.run`` from the ``realism`` config,
on by default for real data): besides the paired test FFA, the test fakes are scored against the
training split's FFA targets (``test/fid_train``, ``test/kid_train``) and a folder of real FFA frames
(``test/fid_frames``, ...). The reference features are kept (:attr:`realism`) so that run.py scores the
trivial baselines and the real test FFA against the same sets.
"""

import logging

import lightning as L
import torch
import torch.distributed as dist

from fundus2ffa.metrics.fid import frechet_distance, kernel_inception_distance, kid_subset_size

log = logging.getLogger(__name__)

STAGES = ("val", "test")


class ImageSetMetrics(L.Callback):
    """Set-level FID / KID of generated vs real FFA.

    Args:
        stages: which evaluations to score: test (default) and/or val. Validation FID each epoch costs two
            Inception passes per validation image.
        fid, kid: which metrics to log.
        feature_extractor: fid_helper (offline weights cache, default) | torchmetrics (downloads).
        weights: fid_helper weights source (``pretrained.fid_inception``: cache or a path).
        resize: tf1 (default, as the TF FID reference) | bilinear | bilinear_antialias.
        kid_subsets, kid_subset_size: KID subsets of min(kid_subset_size, N) samples.
        chunk_size: images per Inception forward.
        seed: KID subset sampling seed.
        references: extra reference sets for the test stage: {'train': bool (the training targets),
            'frames': a folder of real FFA frames or None, 'max_frames': int}; None: the paired test FFA only.
    """

    def __init__(
        self,
        stages=("test",),
        fid: bool = True,
        kid: bool = True,
        feature_extractor: str = "fid_helper",
        weights: str | None = "cache",
        resize: str = "tf1",
        kid_subsets: int = 100,
        kid_subset_size: int = 50,
        chunk_size: int = 32,
        seed: int = 0,
        references: dict | None = None,
    ):
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            from fundus2ffa.errors import ConfigError

            raise ConfigError(f"callbacks.image_set_metrics.stages: unknown {unknown}; use a subset of {list(STAGES)}")
        self.stages = tuple(stages)
        self.fid, self.kid = bool(fid), bool(kid)
        self.extractor_config = {"backend": feature_extractor, "weights": weights, "resize": resize, "chunk_size": chunk_size}
        self.kid_subsets, self.kid_subset_size, self.seed = int(kid_subsets), int(kid_subset_size), int(seed)
        self._extractor = None
        self._store: dict[str, dict] = {}
        self.references = dict(references) if references else None
        self.realism = None  # metrics/realism.Realism after a test epoch with references

    # ----------------------------------------------------------------- features
    def extractor(self, device: torch.device):
        if self._extractor is None:
            from fundus2ffa.metrics.inception import InceptionFeatures

            self._extractor = InceptionFeatures(**self.extractor_config)
        return self._extractor.to(device)

    def _collect(self, stage: str, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if stage not in self.stages or not (self.fid or self.kid):
            return
        fake = outputs.get("fake") if isinstance(outputs, dict) else None
        if fake is None:
            fake = pl_module.translate(batch["cf"])
        extractor = self.extractor(pl_module.device)
        with torch.no_grad():
            fake_features = extractor.features_from_model_range(fake.detach().float()).cpu()
            real_features = extractor.features_from_model_range(batch["ffa"].float()).cpu()
        ids = batch.get("id")
        if ids is None:  # no ids: nothing to de-duplicate by, keep every sample
            rank = getattr(pl_module, "global_rank", 0)
            ids = [f"{rank}:{batch_idx}:{i}" for i in range(fake_features.shape[0])]
        store = self._store.setdefault(stage, {"ids": [], "real": [], "fake": []})
        store["ids"].extend(str(i) for i in ids)
        store["real"].append(real_features)
        store["fake"].append(fake_features)

    @staticmethod
    def _gather(store: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' features, one row per sample id, in id order."""
        ids = store["ids"]
        real = torch.cat(store["real"]) if store["real"] else torch.zeros(0, 2048)
        fake = torch.cat(store["fake"]) if store["fake"] else torch.zeros(0, 2048)
        parts = [(ids, real, fake)]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (ids, real, fake))
        rows = {}
        for part_ids, part_real, part_fake in parts:
            for i, sample_id in enumerate(part_ids):
                rows.setdefault(sample_id, (part_real[i], part_fake[i]))
        order = sorted(rows)
        if not order:
            return torch.zeros(0, 2048), torch.zeros(0, 2048)
        return torch.stack([rows[k][0] for k in order]), torch.stack([rows[k][1] for k in order])

    def scores(self, stage: str) -> dict[str, float]:
        """FID/KID of the features collected for ``stage`` (gathered over ranks); clears them."""
        # every rank gathers, also one that evaluated nothing, or the collective would hang
        store = self._store.pop(stage, None) or {"ids": [], "real": [], "fake": []}
        real, fake = self._gather(store)
        n = real.shape[0]
        if n < 2:
            log.warning("%s: FID/KID need at least 2 images, got %d; not computed", stage, n)
            return {}
        out = {}
        if self.fid:
            if n < 2048:
                log.info("%s/fid over %d images: FID is biased upwards for small sets; compare at equal N, see kid", stage, n)
            out["fid"] = float(frechet_distance(real, fake))
        if self.kid:
            mean, std = kernel_inception_distance(real, fake, self.kid_subsets, self.kid_subset_size, seed=self.seed)
            out["kid"], out["kid_std"] = float(mean), float(std)
            out["kid_subset_size"] = float(kid_subset_size(n, n, self.kid_subset_size))
        out["fid_count"] = float(n)
        return out

    # ----------------------------------------------------------------- realism references
    def _reference_realism(self, trainer, pl_module, real_test: torch.Tensor):
        """A metrics/realism.Realism with the paired test FFA and the configured reference sets (the
        training targets and the frames folder are read once, then kept)."""
        from fundus2ffa.metrics.realism import Realism, frame_files, read_frames

        if self.realism is None:
            self.realism = Realism(self.extractor(pl_module.device), self.kid_subsets, self.kid_subset_size, self.seed)
            datamodule = getattr(trainer, "datamodule", None)
            size = None
            if self.references.get("train") and datamodule is not None and "train" in getattr(datamodule, "datasets", {}):
                from fundus2ffa.metrics.baselines import training_targets

                targets = training_targets(datamodule)
                if targets:
                    size = tuple(targets[0].shape[-2:])
                    features = torch.cat([self.realism.features(t[None]) for t in targets])
                    self.realism.add_reference("train", features, f"the {len(targets)} FFA targets of the training split")
            if self.references.get("frames"):
                files = frame_files(self.references["frames"], self.references.get("max_frames"))
                side = getattr(datamodule, "image_size", 256)
                frames = read_frames(files, size or (side, side))
                features = torch.cat([self.realism.features(part) for part in frames.split(16)]) if len(frames) else torch.zeros(0, 2048)
                self.realism.add_reference("frames", features, f"{len(files)} real FFA frames under {self.references['frames']}")
        self.realism.add_reference("test", real_test, f"the {real_test.shape[0]} real FFA of the test pairs (paired)")
        return self.realism

    def _log(self, stage: str, pl_module: L.LightningModule) -> None:
        if stage == "test" and self.references:
            store = self._store.get(stage) or {"ids": [], "real": [], "fake": []}
            real, fake = self._gather(store)
            if real.shape[0] >= 2:
                realism = self._reference_realism(pl_module.trainer, pl_module, real)
                for key, value in realism.scores(fake).items():
                    if key not in ("fid", "kid", "kid_std"):  # the paired test set's: logged by scores() below
                        pl_module.log(f"{stage}/{key}", value, sync_dist=False, rank_zero_only=False)
        for key, value in self.scores(stage).items():
            # identical on every rank (features were gathered), so no reduction
            pl_module.log(f"{stage}/{key}", value, sync_dist=False, rank_zero_only=False)

    # ----------------------------------------------------------------- hooks
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._store.pop("val", None)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._store.pop("test", None)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._collect("val", pl_module, outputs, batch, batch_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect("test", pl_module, outputs, batch, batch_idx)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val" in self.stages:
            self._log("val", pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if "test" in self.stages:
            self._log("test", pl_module)
