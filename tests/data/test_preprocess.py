"""The one preprocessing (fundus2ffa.data.preprocess, issue 9): training and prediction feed a model the
same input for the same CF (still and video models, CFs with black margins: issue 10.2), the inverse puts
an output back into the raw geometry pixel-accurately, aspect-preserving resize and the FOV crop keep CF,
FFA and masks aligned (issue 11.3), the training box crop resamples once (issue 10.8), and presets carry
the prediction mode their training implies (issue 10.3)."""

import cv2
import numpy as np
import pytest
import torch

from conftest import compose_run
from fundus2ffa.data import FFADataset, Frame, Preprocess, Reader, Record, Transform
from fundus2ffa.writers import write_png
from fundus2ffa.data.synthetic.retina import synthesize_eye
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.priors.fov import fov_bbox, fov_mask
from fundus2ffa.inference.translator import Translator, settings_of


def with_margins(image: np.ndarray, top=7, bottom=19, left=23, right=5) -> np.ndarray:
    """The image inside black margins of unequal widths (a camera frame around the field of view)."""
    pad = ((top, bottom), (left, right)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, pad)


def eye_with_margins(size=48):
    """A synthetic CF in black margins and an FFA frame bright over the CF's field of view."""
    eye = synthesize_eye(3, size=size)
    cf = with_margins(eye.cf)
    inside = cv2.dilate((cf[..., 1] > 11).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    ffa = np.where(inside, np.maximum(with_margins(eye.frames[-1]), 40), 0).astype(np.uint8)
    return cf, ffa


class Recorder:
    """A stand-in generator that records its input and returns the CF's green channel."""

    def translate(self, x):
        self.input = x.clone()
        return x[:, 1:2]


class VideoRecorder(Recorder):
    """The same for a video model: T copies of the green channel."""

    def translate_video(self, x, num_frames, step=None):
        self.input = x.clone()
        return x[:, None, 1:2].repeat(1, num_frames, 1, 1, 1)


def translator(model, cfg) -> Translator:
    """The translator task=predict builds for ``model`` trained with ``cfg``'s data.preprocess."""
    from omegaconf import OmegaConf

    return Translator.for_model(model, OmegaConf.to_container(cfg.data.preprocess, resolve=True), settings_of(cfg.predict))


class MemoryReader(Reader):
    """One in-memory record: a CF, its frames and masks."""

    def __init__(self, cf, frames, masks=None, **kwargs):
        super().__init__(**kwargs)
        self.cf, self.frames, self.masks = cf, list(frames), dict(masks or {})

    def records(self):
        return [Record(id="eye", frames=tuple(Frame(None, p, float(t)) for t, p in enumerate("VL"[: len(self.frames)])))]

    def load_cf(self, record):
        return self.cf

    def load_frames(self, record, frames):
        return [self.frames[int(f.order)] for f in frames]

    def load_masks(self, record):
        return self.masks


def test_still_model_gets_the_same_input_in_training_and_prediction(tmp_path):
    cf, ffa = eye_with_margins()
    root = tmp_path / "pairs"
    write_png(root / "cf" / "eye.png", cf)
    write_png(root / "ffa" / "eye.png", ffa)
    write_png(root / "cf" / "eye2.png", cf)
    write_png(root / "ffa" / "eye2.png", ffa)
    cfg = compose_run(["data=paired_folder", f"data.reader.root={root}", "data.image_size=32", "data.split={train: 0.5, val: 0.0, test: 0.5}"])
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.setup()
    item = dm.datasets["test"][0]
    recorder = Recorder()
    out = translator(recorder, cfg)(cf)
    assert torch.equal(recorder.input[0], item["cf"])  # measured: max |difference| 0.0
    assert out.shape == cf.shape[:2]
    # The field of view was cropped: the raw CF squeezed to 32 px (the old predict) is a different input.
    squeezed = cv2.resize(cf, (32, 32), interpolation=cv2.INTER_CUBIC)
    assert (recorder.input[0] - torch.from_numpy(squeezed).permute(2, 0, 1) / 127.5 + 1).abs().mean() > 0.1


def test_video_model_gets_the_same_input_in_training_and_prediction():
    cf, ffa = eye_with_margins()
    reader = MemoryReader(cf, [ffa, ffa])
    cfg = compose_run(["data=synthetic_video", "data.image_size=32"])
    preprocess = Preprocess.from_config(cfg.data.preprocess)
    dataset = FFADataset(reader, reader.records(), Transform(), preprocess, kind="video", km={})
    item = dataset[0]
    recorder = VideoRecorder()
    frames = translator(recorder, compose_run(["model=fundus2video", "data=synthetic_video", "data.image_size=32", "predict.num_frames=3"]))(cf)
    assert torch.equal(recorder.input[0], item["cf"])
    assert len(frames) == 3 and frames[0].shape == cf.shape[:2]
    assert not frames[0][:7].any() and not frames[0][:, :23].any()  # black margins stay black


@pytest.mark.parametrize("resize", ["native", "square", "scale_width"])
def test_inverse_puts_an_output_back_into_the_input_geometry(resize):
    """A marker in a CF with margins goes through the preprocessing and back: exactly where it was at
    native scale (crop, pad, un-pad, paste), within half a pixel after resampling."""
    cf = np.zeros((70, 90, 3), np.uint8)
    cv2.circle(cf, (50, 33), 27, (150, 90, 40), -1)
    cf[20:26, 58:67] = (250, 250, 250)  # the marker, inside the field of view
    pre = Preprocess(resize=resize, size=40, multiple=16, fov_crop=True, interpolation="linear")
    x, geometry = pre(cf)
    assert x.shape[-1] % 16 == 0 and x.shape[-2] % 16 == 0
    marker_out = (x[0, 2] > 0.9).numpy().astype(np.uint8) * 255  # blue: 250 only at the marker
    back = pre.invert(marker_out, geometry)
    assert back.shape == cf.shape[:2]
    truth = cf[..., 2] == 250
    if resize == "native":
        assert np.array_equal(back > 127, truth)
    else:
        ys, xs = np.nonzero(back > 127)
        assert abs(ys.mean() - 22.5) <= 0.5 and abs(xs.mean() - 62.0) <= 0.5
        assert ((back > 127) ^ truth).sum() <= 0.5 * truth.sum()
    assert not back[~(geometry.fov > 0)].any()  # outside the field of view: black


def test_scale_width_floors_the_height_as_pix2pix_and_pix2pixhd():
    """Issue 20 item 5: both references compute the new height as int(size * h / w) (junyanz's with a
    floor of crop_size as well): 682 x 853 (a UWF frame) at width 1000 is 799.53 -> 799, not 800."""
    pre = Preprocess(resize="scale_width", size=1000)
    assert pre.output_size(682, 853) == (799, 1000)
    assert pre.output_size(576, 720) == (800, 1000)  # exact: unchanged
    assert Preprocess(resize="scale_width", size=512).output_size(3, 4) == (384, 512)
    for height, width, side in [(682, 853, 256), (170, 213, 128), (1000, 1333, 511), (7, 10, 5)]:
        assert Preprocess(resize="scale_width", size=side).output_size(height, width) == (max(1, int(side * height / width)), side)


def marker_centroids(sample) -> dict:
    """Centroid of the marker in the CF (blue 250), the FFA frame (250) and the lesion mask."""
    found = {"cf": sample.cf[..., 2] > 200, "ffa": sample.frames[0] > 200, "lesion": sample.masks["lesion"] > 0}
    return {k: np.argwhere(v).mean(0) if v.sum() >= 4 else None for k, v in found.items()}


def test_aspect_preserving_resize_and_fov_crop_keep_cf_ffa_and_masks_aligned():
    cf = np.zeros((80, 130, 3), np.uint8)
    cv2.ellipse(cf, (70, 40), (52, 33), 0, 0, 360, (140, 100, 50), -1)
    ffa = np.where(cf[..., 1] > 0, 60, 0).astype(np.uint8)
    lesion = np.zeros((80, 130), np.uint8)
    cf[30:38, 80:92], ffa[30:38, 80:92], lesion[30:38, 80:92] = (250, 250, 250), 250, 1
    reader = MemoryReader(cf, [ffa], {"lesion": lesion})
    pre = Preprocess(resize="scale_width", size=52, fov_crop=True, interpolation="linear")
    plain = FFADataset(reader, reader.records(), Transform(), pre).draw(0)
    top, bottom, left, right = fov_bbox(fov_mask(cf, [ffa]))
    box_h, box_w = bottom - top, right - left
    assert plain.cf.shape[:2] == (int(box_h * 52 / box_w), 52)  # aspect kept: width 52, height floored
    ys, xs = np.nonzero(plain.masks["lesion"])
    assert abs((xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1) - 12 / 8) < 0.35  # the 8x12 marker keeps its shape
    augmenting = FFADataset(reader, reader.records(), Transform(crop_size=24, hflip=0.5, vflip=0.5), pre, train=True)
    seen = 0
    for seed in range(40):
        centroids = marker_centroids(augmenting.draw(0, seed))
        if any(c is None for c in centroids.values()):
            continue
        seen += 1
        assert np.abs(centroids["cf"] - centroids["ffa"]).max() <= 0.5, seed
        assert np.abs(centroids["cf"] - centroids["lesion"]).max() <= 0.5, seed
    assert seen >= 5


def test_training_box_crop_resamples_the_native_image_once():
    """Fundus2Video's random box (section 4.2 step 5) is cut from the native FOV box and resized once."""
    cf, ffa = eye_with_margins(64)
    reader = MemoryReader(cf, [ffa, ffa])
    pre = Preprocess(resize="square", size=32, fov_crop=True, interpolation="linear")
    dataset = FFADataset(reader, reader.records(), Transform(random_crop=1.0), pre, train=True, kind="video", km={})
    sample = dataset.draw(0, seed=11)
    # Reference: the same box drawn independently, mapped to raw pixels, one cv2 resize of the raw cut.
    fov = pre.plan(cf, [ffa, ffa]).fov
    top, bottom, left, right = pre.plan(cf, [ffa, ffa]).box
    rng = np.random.default_rng([11, 1])
    rng.random()  # the draw of whether to crop (probability 1)
    y1, y2, x1, x2 = _box(rng, 32)
    sy, sx = (bottom - top) / 32, (right - left) / 32
    r = (top + round(y1 * sy), top + max(round(y1 * sy) + 1, round(y2 * sy)), left + round(x1 * sx), left + max(round(x1 * sx) + 1, round(x2 * sx)))
    raw = cf * (fov[..., None] > 0)
    expected = cv2.resize(np.ascontiguousarray(raw[r[0] : r[1], r[2] : r[3]]), (32, 32), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(sample.cf, expected)
    assert (r[1] - r[0]) < (bottom - top)  # it did zoom in


def _box(rng, side):
    def span():
        start = int(rng.uniform(0.0, side / 1.5))
        end = int(round(rng.uniform(start + side / 3.0, side)))
        return start, min(side, max(start + 1, end))

    (y1, y2), (x1, x2) = span(), span()
    return y1, y2, x1, x2


def test_presets_carry_the_prediction_mode_their_training_implies():
    def policy(*overrides):
        return translator(Recorder(), compose_run(list(overrides))).preprocess

    assert policy("experiment=kamran2020").resize == "native"  # 512 crops of 720x576 images
    assert policy("experiment=li2020").resize == "native"  # 288x360 patches
    paired = policy("data=paired_folder")
    assert paired.resize == "square" and paired.fov_crop
    assert policy("data=synthetic").resize == "square"
    forced = policy("experiment=li2020", "predict.mode=resize", "predict.image_size=64")
    assert (forced.resize, forced.size) == ("square", 64)
    with pytest.raises(ConfigError, match="predict.mode"):
        policy("data=synthetic", "predict.mode=squash")


def test_bad_settings_and_a_black_image_name_the_key():
    with pytest.raises(ConfigError, match=r"data\.preprocess has unknown key\(s\) \['sise'\]"):
        Preprocess.from_config({"resize": "square", "sise": 3})
    with pytest.raises(ConfigError, match=r"data\.preprocess\.resize must be one of"):
        Preprocess(resize="stretch")
    with pytest.raises(ConfigError, match=r"data\.preprocess\.size"):
        Preprocess(resize="square")
    with pytest.raises(DataError, match=r"empty field of view.*data\.preprocess\.fov_crop=false"):
        Preprocess(fov_crop=True)(np.zeros((20, 20, 3), np.uint8))


def test_pil_bicubic_shrinks_thin_vessels_without_aliasing():
    """pix2pix loads with PIL's bicubic, which low-pass filters when shrinking; OpenCV's INTER_CUBIC
    samples 4 x 4 pixels whatever the factor, so 1-px bright lines (thin filled vessels of a large
    angiogram) become a pattern of dots and gaps. Measured here: a grating of 1-px lines every 7 px
    shrunk 8x keeps its mean either way, but varies ~10x less across columns with pil_bicubic."""
    from PIL import Image

    from fundus2ffa.priors.fov import PIL_BICUBIC, resize_image

    grating = np.zeros((512, 512), np.uint8)
    grating[:, ::7] = 255
    pil = resize_image(grating, 64, 64, PIL_BICUBIC)
    cubic = resize_image(grating, 64, 64, cv2.INTER_CUBIC)
    assert pil.dtype == np.uint8 and pil.shape == (64, 64)
    assert abs(float(pil.mean()) - float(grating.mean())) < 2.0
    assert pil.std() < 0.25 * cubic.std()
    # the same numbers as PIL itself on an RGB uint8 image, channel by channel
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    ours = resize_image(rgb, 20, 30, PIL_BICUBIC)
    reference = np.asarray(Image.fromarray(rgb).resize((30, 20), Image.BICUBIC))
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1
