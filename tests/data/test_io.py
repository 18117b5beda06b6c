"""Image reading (fundus2ffa.data.io): H x W kept, CF must be colour, bad files fail naming file and fix."""

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from fundus2ffa.data.io import image_size, is_grey, list_images, read_cf, read_grey, write_png
from fundus2ffa.errors import DataError

UWF_DATA = SHARED_DATA / "uwf_slo_fa_phases"


def colour_image(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_read_cf_keeps_height_by_width_rgb(tmp_path):
    image = colour_image(24, 32)
    Image.fromarray(image).save(tmp_path / "cf.png")
    cf = read_cf(tmp_path / "cf.png")
    assert cf.shape == (24, 32, 3) and cf.dtype == np.uint8
    np.testing.assert_array_equal(cf, image)
    assert image_size(tmp_path / "cf.png") == (32, 24)  # PIL order: width x height


@pytest.mark.parametrize("stored_as", ["L", "RGB"])
def test_read_cf_refuses_grey_with_swap_hint(tmp_path, stored_as):
    grey = colour_image()[..., 0]
    Image.fromarray(grey).convert(stored_as).save(tmp_path / "grey.png")
    with pytest.raises(DataError) as error:
        read_cf(tmp_path / "grey.png")
    message = str(error.value)
    assert "grey.png" in message and "greyscale" in message
    assert "swapped" in message and "allow_grey_cf" in message
    assert read_cf(tmp_path / "grey.png", allow_grey=True).shape == (24, 32, 3)


def test_read_cf_accepts_uwf_slo_pseudo_colour():
    """The UWF-SLO input is red/green only (blue flat): colour, not grey (data README)."""
    slo = read_cf(UWF_DATA / "train" / "1.png")
    assert slo.shape == (682, 853, 3)
    assert np.ptp(slo[..., 2]) <= 4 and not is_grey(slo)


def test_missing_image_names_file_and_data_root(tmp_path):
    for read in (read_cf, read_grey, image_size):
        with pytest.raises(DataError, match=r"not found: .*absent\.png.*data\.(reader\.)?root"):
            read(tmp_path / "absent.png")


def test_garbage_bytes_are_reported_as_corrupt(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not a PNG file" * 8)
    for read in (read_cf, read_grey, image_size):
        with pytest.raises(DataError) as error:
            read(path)
        message = str(error.value)
        assert "garbage.png" in message and "corrupt" in message and "re-export it or remove it" in message


def test_truncated_jpeg_fails_when_decoded(tmp_path):
    whole = tmp_path / "whole.jpg"
    Image.fromarray(colour_image(64, 64)).save(whole, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for read in (read_cf, read_grey):
        with pytest.raises(DataError, match=r"cannot read image .*truncated\.jpg.*truncated.*re-export"):
            read(truncated)


def test_read_grey_luma_green_and_16_bit(tmp_path):
    image = colour_image()
    Image.fromarray(image).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_grey(tmp_path / "rgb.png", channel="green"), image[..., 1])
    luma = read_grey(tmp_path / "rgb.png")
    assert luma.shape == (24, 32) and luma.dtype == np.uint8

    grey = image[..., 0]
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "grey_as_rgb.png")
    np.testing.assert_array_equal(read_grey(tmp_path / "grey_as_rgb.png"), grey)

    deep = (grey.astype(np.uint16) * 257)  # 16-bit full range
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(read_grey(tmp_path / "deep.png").astype(int), grey.astype(int), atol=1)


def test_list_images_missing_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match=r"data folder not found: .*nowhere.*data\.(reader\.)?root"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"no images .* in .*empty\. Put the images there"):
        list_images(tmp_path / "empty")
    Image.fromarray(colour_image()).save(tmp_path / "empty" / "b.PNG")
    Image.fromarray(colour_image()).save(tmp_path / "empty" / "a.jpg")
    assert [p.name for p in list_images(tmp_path / "empty")] == ["a.jpg", "b.PNG"]


def test_write_png_round_trip_leaves_no_partial_file(tmp_path):
    image = colour_image()
    write_png(tmp_path / "out" / "x.png", image)
    np.testing.assert_array_equal(read_cf(tmp_path / "out" / "x.png"), image)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.png"]
