"""Image reading (fundus2ffa.data.io): H x W kept, CF must be colour, bad files fail naming file and fix."""

import numpy as np
import pytest
from PIL import Image

from conftest import UWF, UWF_SIZE
from fundus2ffa.data.io import image_size, is_grey, list_images, read_cf, read_grey
from fundus2ffa.writers import write_png
from fundus2ffa.errors import DataError



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
    slo = read_cf(UWF / "train" / "1.png")
    assert slo.shape == (UWF_SIZE[1], UWF_SIZE[0], 3)
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


# EXIF orientation, real bit depth, broken links (issue 8 item 6)


def _save_rotated_with_exif(path, upright: np.ndarray, orientation: int = 6) -> None:
    """Store ``upright`` as a camera does: pixels rotated, plus the EXIF tag that turns them upright.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the upright
    image turned 90 degrees counter-clockwise (np.rot90 with k=1)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(path, exif=exif.tobytes())


@pytest.mark.parametrize("kind", ["cf", "ffa"])
def test_exif_rotated_image_reads_upright_and_header_size_agrees(tmp_path, kind):
    upright = colour_image(24, 32, seed=5) if kind == "cf" else colour_image(24, 32, seed=5)[..., 0]
    _save_rotated_with_exif(tmp_path / "rotated.png", upright)
    assert Image.open(tmp_path / "rotated.png").size == (24, 32)  # stored pixels are 32 high, 24 wide
    read = read_cf if kind == "cf" else read_grey
    np.testing.assert_array_equal(read(tmp_path / "rotated.png"), upright)
    assert image_size(tmp_path / "rotated.png") == (32, 24)  # width x height after orientation


def test_exif_rotated_cf_trains_aligned_with_its_ffa(tmp_path):
    """A square pair whose CF is stored rotated with an EXIF tag: the reader's pre-training check passes
    (header sizes after orientation) and the decoded CF is the unrotated one, aligned with its FFA."""
    from fundus2ffa.data.readers import PairedFolder

    cf = colour_image(32, 32, seed=7)
    ffa = cf[..., 1].copy()
    (tmp_path / "cf").mkdir()
    (tmp_path / "ffa").mkdir()
    _save_rotated_with_exif(tmp_path / "cf" / "eye.png", cf)
    Image.fromarray(ffa).save(tmp_path / "ffa" / "eye.png")
    # a non-square pair would fail the size check if the header size ignored the tag
    _save_rotated_with_exif(tmp_path / "cf" / "wide.png", colour_image(24, 40, seed=8))
    Image.fromarray(colour_image(24, 40, seed=8)[..., 1]).save(tmp_path / "ffa" / "wide.png")
    reader = PairedFolder(root=tmp_path)
    records = reader.records()
    reader.check(records, decode=False)
    sample = reader.load(next(r for r in records if r.cf.stem == "eye"))
    np.testing.assert_array_equal(sample.cf, cf)
    np.testing.assert_array_equal(sample.cf[..., 1], sample.ffa)  # pixel for pixel aligned


def _png_with_sbit(path, values: np.ndarray, bits: int) -> None:
    """A 16-bit grey PNG with an sBIT chunk of ``bits`` significant bits (inserted after IHDR)."""
    import struct
    import zlib

    Image.fromarray(values).save(path)
    data = path.read_bytes()
    ihdr_end = 8 + 8 + 13 + 4
    body = b"sBIT" + bytes([bits])
    chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    path.write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])


def test_12_bit_angiogram_in_16_bit_png_is_scaled_by_its_real_depth(tmp_path):
    rng = np.random.default_rng(0)
    twelve = rng.integers(0, 4096, (16, 20)).astype(np.uint16)
    twelve[0, 0] = 4095  # full scale at 12 bits
    Image.fromarray(twelve).save(tmp_path / "fa12.png")
    expected = np.clip(np.floor(twelve / 4095.0 * 255.0 + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(read_grey(tmp_path / "fa12.png"), expected)  # auto: from the max value
    assert read_grey(tmp_path / "fa12.png").max() == 255  # not near-black (4095/65535*255 = 16)
    assert read_grey(tmp_path / "fa12.png", bit_depth=16).max() == 16  # an explicit depth is obeyed

    # a dim 12-bit image (max 1000 would look 10-bit) says its depth in sBIT: sBIT wins
    dim = (twelve // 5).astype(np.uint16)
    _png_with_sbit(tmp_path / "dim12.png", dim, 12)
    np.testing.assert_array_equal(
        read_grey(tmp_path / "dim12.png"), np.floor(dim / 4095.0 * 255.0 + 0.5).astype(np.uint8)
    )
    Image.fromarray(dim).save(tmp_path / "dim_no_sbit.png")
    assert dim.max() == 819  # without sBIT, auto takes the smallest depth that holds it: 10 bits
    assert read_grey(tmp_path / "dim_no_sbit.png").max() == int(np.floor(819 / 1023 * 255 + 0.5))


def test_bit_depth_is_a_reader_setting_checked_by_name(tmp_path):
    from fundus2ffa.data.readers import PairedFolder
    from fundus2ffa.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.reader\.bit_depth must be auto or one of 8, 10, 12, 14, 16, got 11"):
        PairedFolder(root=tmp_path, bit_depth=11)
    (tmp_path / "cf").mkdir()
    (tmp_path / "ffa").mkdir()
    Image.fromarray(colour_image(8, 8)).save(tmp_path / "cf" / "a.png")
    Image.fromarray(np.full((8, 8), 4095, np.uint16)).save(tmp_path / "ffa" / "a.png")
    reader = PairedFolder(root=tmp_path, bit_depth=12)
    assert reader.load(reader.records()[0]).ffa.min() == 255
    assert PairedFolder(root=tmp_path, bit_depth=16).load(reader.records()[0]).ffa.max() == 16


def test_broken_symlink_is_reported_as_a_broken_link(tmp_path):
    Image.fromarray(colour_image()).save(tmp_path / "real.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "moved_away.png")
    for read in (read_cf, read_grey, image_size):
        with pytest.raises(DataError, match=r"link\.png is a broken symbolic link \(its target .*moved_away\.png does not"):
            read(tmp_path / "link.png")
    with pytest.raises(DataError, match=r"link\.png is a broken symbolic link"):
        list_images(tmp_path)  # not silently dropped from the listing
