"""A web demo of trained checkpoints: upload a colour fundus photograph, see the generated FFA.

    pip install -e ".[app]"
    python -m fundus2ffa.app ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
    python -m fundus2ffa.app "ckpt_path=[a.ckpt,b.ckpt]" predict.image_size=512 port=8080
    python -m fundus2ffa.app ckpt_path=... share_on_network=true        # reachable from your network

For a clinician or collaborator without a Python session (the Gradio demos medical-imaging papers
ship): a CF of any size (JPEG, PNG, TIFF) is translated exactly as ``task=predict`` does: each
checkpoint is loaded by the one loader (:func:`fundus2ffa.loader.load`) and translated by the one
translator (:class:`fundus2ffa.inference.translator.Translator`: the checkpoint's preprocessing, the
``predict`` settings of ``conf/app.yaml`` with predict's defaults, tiles for large images), and shown beside the CF with a compare slider, an
opacity blend and the field-of-view outline (:func:`fundus2ffa.priors.fov.fov_mask`, reference_spec
1.3); video models (those with ``translate_video``) add a player and a frame slider. The PNG (or MP4)
can be downloaded. Several checkpoints can be selected. ``predict.image_size=null`` (the default) takes
the training size from the checkpoint's stored run config (used by ``predict.mode=resize``).

Offline by design: Gradio's analytics are switched off before it is imported, the page uses system
fonts, server-side rendering (a Node process) is off and Gradio's public share tunnel is never used;
the server listens on 127.0.0.1 unless ``share_on_network=true`` (0.0.0.0, your network only).
A bad upload (not an image, corrupt, grey) is answered in the page with the reason and the fix.

A few example images are one click away: synthetic eyes (``fundus2ffa/app_examples/``, drawn by
:func:`fundus2ffa.data.synthetic.retina.synthesize_eye`, seeds 11-13, 448 x 384 JPEG), no patient data.
When the server is ready, one line gives its URL and how long the start took.
"""

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from fundus2ffa.config import config_dir
from fundus2ffa.errors import ConfigError, DataError, Fundus2FFAError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

UPLOAD_TYPES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
FOV_COLOUR = (0, 255, 0)
EXAMPLES_DIR = Path(__file__).resolve().parent / "app_examples"
HELP = f"""python -m fundus2ffa.app: the web demo of trained checkpoints (upload a colour fundus photograph, see the
generated FFA; a local server, offline).

usage: python -m fundus2ffa.app ckpt_path=<checkpoint> [key=value ...]
example: python -m fundus2ffa.app ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt port=8080
{__doc__}
The keys, with their defaults (conf/app.yaml):
"""


# the compare slider shows the whole image, never enlarged past its own pixels (a 240 px upload stays 240 px,
# centred, instead of being blown up until the eye touches the frame); both halves keep the same geometry
CSS = "#compare img { object-fit: scale-down !important; }"


def example_images() -> list[Path]:
    """The synthetic eyes offered as examples (shipped in fundus2ffa/app_examples)."""
    return sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in UPLOAD_TYPES) if EXAMPLES_DIR.is_dir() else []


def load_config(argv: list[str]) -> DictConfig:
    """``conf/app.yaml`` merged with ``key=value`` arguments; unknown keys are refused by name."""
    base = OmegaConf.load(config_dir() / "app.yaml")
    base.predict.tiled = OmegaConf.load(config_dir() / "run.yaml").predict.tiled  # predict's tiles, one definition
    OmegaConf.set_struct(base, True)
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(f"arguments are key=value (e.g. ckpt_path=run/checkpoints/last.ckpt), got {' '.join(bad)}")
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(argv)))
    except Exception as exc:  # noqa: BLE001 - OmegaConf's key errors
        raise ConfigError(f"{exc}; the keys of conf/app.yaml are {', '.join(base.keys())}") from None
    if not cfg.ckpt_path:
        raise ConfigError("the demo needs a checkpoint: add ckpt_path=<run>/checkpoints/last.ckpt (or ckpt_path=[a.ckpt,b.ckpt])")
    return cfg


def checkpoint_paths(cfg: DictConfig) -> list[Path]:
    paths = list(cfg.ckpt_path) if isinstance(cfg.ckpt_path, (list, ListConfig)) else [cfg.ckpt_path]
    paths = [Path(str(p)) for p in paths]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"ckpt_path={path} does not exist; point it to a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt)")
    return paths


def checkpoint_label(path: Path) -> str:
    """``<run folder>/<file>``: last.ckpt files of different runs stay distinguishable."""
    return f"{path.parent.parent.name}/{path.name}" if path.parent.name == "checkpoints" else str(path)


def pick_device(name: str):
    """The torch.device for ``device=auto|cpu|cuda`` (torch is imported here: ``--help`` needs none of it)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") or (name == "cuda" and not torch.cuda.is_available()):
        raise ConfigError(f"device must be auto, cpu or cuda (with a GPU present), got {name!r}")
    return torch.device(name)


def load_models(paths: list[Path], device, cfg: DictConfig | None = None) -> dict:
    """label -> :class:`~fundus2ffa.inference.translator.Translator` of each checkpoint (loaded by
    :func:`fundus2ffa.loader.load`: weights_only, allow-listed targets; nothing from the file runs),
    on ``device``, with the ``predict`` settings of ``cfg`` (predict's defaults without it)."""
    from fundus2ffa import loader
    from fundus2ffa.inference.translator import Translator

    translators = {}
    for path in paths:
        loaded = loader.load(path)
        loaded.model.to(device).eval()
        translators[checkpoint_label(path)] = Translator.from_loaded(loaded, translate_settings(cfg, loaded), device=device)
    return translators


def translate_settings(cfg: DictConfig | None, loaded):
    """The demo's ``predict`` settings on top of ``task=predict``'s defaults (conf/run.yaml), so that the
    demo tiles what predict tiles; ``image_size`` null: the checkpoint's training size."""
    from fundus2ffa.inference.translator import settings_of

    base = OmegaConf.load(config_dir() / "run.yaml").predict
    node = OmegaConf.merge(
        {k: base[k] for k in ("mode", "multiple", "tiled")},
        {k: cfg.predict[k] for k in ("mode", "image_size", "multiple", "tiled", "num_frames") if cfg is not None and k in cfg.predict},
    )
    if node.get("image_size") is None:
        node.image_size = int(loaded.stored("data.image_size", 256) or 256)
    return settings_of(node)


@dataclass
class Translation:
    """One upload's outputs: uint8 RGB CF, grey FFA (the first frame for video models) and the files."""

    cf: np.ndarray
    ffa: np.ndarray
    fov: np.ndarray
    frames: list[np.ndarray] = field(default_factory=list)
    png: Path | None = None
    mp4: Path | None = None


def fov_overlay(cf: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """The CF with the outline of its field of view drawn in green (2 px per 512 px of width)."""
    import cv2

    contours, _ = cv2.findContours(fov.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    overlay = cf.copy()
    cv2.drawContours(overlay, contours, -1, FOV_COLOUR, max(1, round(cf.shape[1] / 256)))
    return overlay


def blend(cf: np.ndarray, ffa: np.ndarray, opacity: float) -> np.ndarray:
    """(1 - opacity) * CF + opacity * FFA (grey replicated), uint8 RGB."""
    ffa_rgb = np.repeat(ffa[..., None], 3, axis=2) if ffa.ndim == 2 else ffa
    mixed = (1.0 - float(opacity)) * cf.astype(np.float32) + float(opacity) * ffa_rgb.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def translate_upload(translator, upload: str | Path, cfg: DictConfig, out_dir: Path) -> Translation:
    """Read an uploaded CF and translate it as ``task=predict`` does; write the PNG (and MP4) to download."""
    from fundus2ffa.data.io import read_cf
    from fundus2ffa.priors.fov import fov_mask
    from fundus2ffa.writers import write_frames, write_png

    upload = Path(upload)
    if upload.suffix.lower() not in UPLOAD_TYPES:
        raise ConfigError(f"{upload.name} is not a JPEG, PNG or TIFF image; upload a colour fundus photograph ({', '.join(UPLOAD_TYPES)})")
    try:
        cf = read_cf(upload, allow_grey=bool(cfg.allow_grey_cf), max_pixels=cfg.max_pixels, where="the upload", key="max_pixels")
    except DataError as exc:
        text = str(exc)
        if "greyscale" in text:
            reason = "it is greyscale (an angiogram, or a grey export?); start the demo with allow_grey_cf=true to accept it"
        elif "pixels" in text:  # too large (a decompression bomb or a scan): the reader's message says the limit
            reason = text
        else:
            reason = "it is corrupt or not an image; upload a JPEG, PNG or TIFF colour fundus photograph"
        raise DataError(f"{upload.name} cannot be used as a colour fundus photograph: {reason}") from None
    stem = out_dir / f"{upload.stem}_ffa"
    if translator.is_video:
        frames = translator(cf)
        mp4 = Path(write_frames(stem, frames, "mp4", float(cfg.predict.fps)))
        png = write_png(stem.with_suffix(".png"), frames[-1])
        return Translation(cf, frames[-1], fov_mask(cf), frames, png, mp4)
    ffa = translator(cf)
    png = write_png(stem.with_suffix(".png"), ffa)
    return Translation(cf, ffa, fov_mask(cf), [], png, None)


def build_demo(cfg: DictConfig, models: dict):
    """The Gradio Blocks of the demo (not launched)."""
    import gradio as gr

    labels = list(models)
    work = Path(tempfile.mkdtemp(prefix="fundus2ffa_app_"))

    def run(upload, label):
        empty = (None, None, None, None, gr.update(value=None, visible=False), None,
                 gr.update(maximum=1, value=0, visible=False), None)
        if upload is None:
            return ("Upload a colour fundus photograph (JPEG, PNG or TIFF).", *empty)
        try:
            result = translate_upload(models[label], upload, cfg, work / f"{len(list(work.iterdir())):04d}")
        except Fundus2FFAError as exc:
            return (f"**Cannot use this upload:** {exc}", *empty)
        ffa_rgb = np.repeat(result.ffa[..., None], 3, axis=2)
        height, width = result.cf.shape[:2]
        video = str(result.mp4) if result.mp4 else None
        last = max(len(result.frames) - 1, 0)
        frames = gr.update(maximum=max(last, 1), value=last, visible=bool(result.frames))
        status = f"Generated with **{label}** at {width} x {height} px (predict.mode={cfg.predict.mode or 'as trained'})."
        downloads = [str(p) for p in (result.png, result.mp4) if p]
        return (status, (result.cf, ffa_rgb), blend(result.cf, result.ffa, 0.5), fov_overlay(result.cf, result.fov),
                result.ffa, gr.update(value=video, visible=video is not None), downloads, frames, result)

    def reblend(result, opacity):
        return None if result is None else blend(result.cf, result.ffa, opacity)

    def show_frame(result, index):
        if result is None or not result.frames:
            return None
        return result.frames[int(min(max(index, 0), len(result.frames) - 1))]

    with gr.Blocks(title="fundus2ffa demo", analytics_enabled=False) as demo:
        gr.Markdown("# fundus2ffa: colour fundus to fluorescein angiography\n"
                    "Research software, not a medical device: the generated angiogram is not a diagnosis.")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Colour fundus photograph (JPEG, PNG, TIFF; any size)", file_types=list(UPLOAD_TYPES),
                                 type="filepath", elem_id="upload")
                choice = gr.Dropdown(labels, value=labels[0], label="Checkpoint", elem_id="checkpoint")
                button = gr.Button("Generate FFA", variant="primary", elem_id="generate")
                examples_slot = gr.Column()
                status = gr.Markdown("Upload a colour fundus photograph (JPEG, PNG or TIFF).", elem_id="status")
                files = gr.File(label="Download (PNG; MP4 for video models)", file_count="multiple", interactive=False,
                                elem_id="downloads")
            with gr.Column(scale=2):
                compare = gr.ImageSlider(label="CF | generated FFA (drag to compare)", type="numpy", format="png",
                                         interactive=False, elem_id="compare", max_height=480)
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="FFA opacity over the CF", elem_id="opacity")
                blended = gr.Image(label="Blend", type="numpy", height=320, format="png", interactive=False, elem_id="blend")
        with gr.Row():
            overlay = gr.Image(label="Field of view (green outline)", type="numpy", height=320, format="png", interactive=False, elem_id="fov")
            generated = gr.Image(label="Generated FFA (input resolution)", type="numpy", height=320, format="png", interactive=False,
                                 elem_id="generated")
        any_video = any(t.is_video for t in models.values())
        with gr.Row(visible=any_video):
            player = gr.Video(label="Generated FFA video", interactive=False, visible=False, elem_id="video")
            with gr.Column():
                frame = gr.Slider(0, 1, value=0, step=1, label="Frame", visible=False, elem_id="frame")
                frame_image = gr.Image(label="Frame", type="numpy", format="png", interactive=False, height=320,
                                       elem_id="frame_image")
        state = gr.State(None)
        outputs = [status, compare, blended, overlay, generated, player, files, frame, state]
        button.click(run, [upload, choice], outputs)
        upload.change(run, [upload, choice], outputs)  # an upload, an example clicked, or the file cleared
        examples = example_images()
        if examples:
            with examples_slot:
                gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Examples (synthetic eyes): click one",
                            elem_id="examples", example_labels=[p.stem.replace("_", " ") for p in examples],
                            cache_examples=False)
        opacity.change(reblend, [state, opacity], blended)
        frame.change(show_frame, [state, frame], frame_image)
    return demo


def launch(cfg: DictConfig, prevent_thread_lock: bool = False):
    """Load the checkpoints, build the page and serve it; returns Gradio's (app, local url, share url)."""
    import gradio as gr

    device = pick_device(str(cfg.device))
    models = load_models(checkpoint_paths(cfg), device, cfg)
    demo = build_demo(cfg, models)
    host = "0.0.0.0" if cfg.share_on_network else str(cfg.host)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    return demo.launch(
        server_name=host, server_port=None if cfg.port is None else int(cfg.port), share=False,
        prevent_thread_lock=prevent_thread_lock, max_file_size=f"{int(cfg.max_upload_mb)}mb", ssr_mode=False,
        enable_monitoring=False, mcp_server=False, pwa=False, theme=theme, quiet=True, footer_links=[],
        allowed_paths=[str(EXAMPLES_DIR)], css=CSS,
    )


def main(argv: list[str] | None = None) -> None:
    """Serve the demo until Ctrl+C; one line says where and how long the start took."""
    started = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        print((config_dir() / "app.yaml").read_text())
        return
    try:
        _, url, _ = launch(load_config(argv), prevent_thread_lock=True)
    except Fundus2FFAError as exc:
        sys.exit(f"error: {exc}")
    print(f"fundus2ffa demo ready at {url} (started in {time.perf_counter() - started:.1f} s; Ctrl+C stops it)", flush=True)
    try:
        while True:  # the server runs in its own thread; this one waits for Ctrl+C (SIGINT)
            time.sleep(0.5)
    except KeyboardInterrupt:
        import gradio

        gradio.close_all()


if __name__ == "__main__":
    main()
