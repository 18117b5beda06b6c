"""Downstream readers: public vessel-set layouts, labels CSV, class folders, named errors."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.transfer.readers import ImageMaskFolders, LabelledImages


def _rgb(path, seed=0, size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def _mask(path, size=(20, 24), value=255):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(size, np.uint8)
    mask[5:10, 3:20] = value
    Image.fromarray(mask).save(path)


def test_drive_layout(tmp_path):
    for n in (21, 22):
        _rgb(tmp_path / "training/images" / f"{n}_training.tif", n)
        _mask(tmp_path / "training/1st_manual" / f"{n}_manual1.gif")
        _mask(tmp_path / "training/mask" / f"{n}_training_mask.gif", value=255)
    data = ImageMaskFolders(root=str(tmp_path), preset="drive", split="training", image_size=16).load()
    assert data.images.shape == (2, 3, 16, 16) and data.masks.shape == (2, 16, 16) and data.parts is None
    assert set(data.masks.unique().tolist()) == {0, 1} and data.fov.dtype.is_floating_point is False
    with pytest.raises(DataError, match=r"test/images not found.*split=<one folder>"):  # official: needs test/ too
        ImageMaskFolders(root=str(tmp_path), preset="drive", image_size=16).load()
    (tmp_path / "training/1st_manual/22_manual1.gif").unlink()
    with pytest.raises(DataError, match="expected .*22_manual1.gif"):
        ImageMaskFolders(root=str(tmp_path), preset="drive", split="training", image_size=16).load()


def test_chase_layout_and_unknown_preset(tmp_path):
    _rgb(tmp_path / "Image_01L.jpg")
    _mask(tmp_path / "Image_01L_1stHO.png")
    _mask(tmp_path / "Image_01L_2ndHO.png")
    data = ImageMaskFolders(root=str(tmp_path), preset="chase_db1", split="all", image_size=16).load()
    assert len(data) == 1 and data.parts is None
    with pytest.raises(DataError, match="official split .* found no test images.*split=all"):
        ImageMaskFolders(root=str(tmp_path), preset="chase_db1", image_size=16).load()
    with pytest.raises(ConfigError, match="downstream.data.preset must be one of drive"):
        ImageMaskFolders(root=str(tmp_path), preset="drivee")


def test_labels_csv_and_class_folders(tmp_path):
    for i, label in enumerate(["a", "b", "a", "b"]):
        _rgb(tmp_path / "img" / f"{i}.png", i)
    (tmp_path / "labels.csv").write_text("file,diagnosis\n" + "".join(f"img/{i}.png,{l}\n" for i, l in enumerate("abab")))
    data = LabelledImages(csv=str(tmp_path / "labels.csv"), image_column="file", label_column="diagnosis", image_size=16).load()
    assert data.labels.tolist() == [0, 1, 0, 1] and data.classes == ["a", "b"]
    with pytest.raises(DataError, match="no column 'image'.*downstream.data.image_column"):
        LabelledImages(csv=str(tmp_path / "labels.csv"), label_column="diagnosis").load()
    for i, cls in enumerate(["x", "y"]):
        grey = np.full((20, 24), 40 * (i + 1), np.uint8)
        (tmp_path / "folders" / cls).mkdir(parents=True)
        Image.fromarray(grey).save(tmp_path / "folders" / cls / "f.png")
    data = LabelledImages(root=str(tmp_path / "folders"), modality="ffa", image_size=16).load()
    assert data.images.shape == (2, 1, 16, 16) and data.classes == ["x", "y"]
    with pytest.raises(DataError, match="greyscale"):
        LabelledImages(root=str(tmp_path / "folders"), modality="cf", image_size=16).load()


# ------------------------------------------------------------------ official train/test parts (issue 22 item 4)
def _drive(root, train=(21, 22, 23), test=(1, 2)):
    """A small DRIVE tree: training/ and test/ folders with images, first-observer masks and FOV masks."""
    for folder, numbers, word in (("training", train, "training"), ("test", test, "test")):
        for n in numbers:
            _rgb(root / folder / "images" / f"{n:02d}_{word}.tif", n)
            _mask(root / folder / "1st_manual" / f"{n:02d}_manual1.gif")
            fov = np.zeros((20, 24), np.uint8)
            fov[2:18, 2:22] = 255
            (root / folder / "mask").mkdir(parents=True, exist_ok=True)
            Image.fromarray(fov).save(root / folder / "mask" / f"{n:02d}_{word}_mask.gif")
    return root


def test_drive_official_split_reads_both_folders(tmp_path):
    data = ImageMaskFolders(root=str(_drive(tmp_path)), preset="drive", image_size=16).load()
    assert len(data) == 5 and data.parts == ["train"] * 3 + ["test"] * 2
    assert [data.ids[i].split("/")[-1] for i in data.in_part("test")] == ["01_test.tif", "02_test.tif"]
    assert not data.fov.all()  # the preset's field-of-view masks
    # split=all pools both folders without parts (the study then splits by test_fraction)
    pooled = ImageMaskFolders(root=str(tmp_path), preset="drive", split="all", image_size=16).load()
    assert len(pooled) == 5 and pooled.parts is None


def test_fov_null_scores_every_pixel_even_where_the_preset_has_masks(tmp_path):
    _drive(tmp_path)
    data = ImageMaskFolders(root=str(tmp_path), preset="drive", fov=None, image_size=16).load()
    assert data.fov.all()
    shutil.rmtree(tmp_path / "test" / "mask")  # a copy without FOV masks: the fix names fov=null
    with pytest.raises(DataError, match="downstream.data.fov=null"):
        ImageMaskFolders(root=str(tmp_path), preset="drive", image_size=16).load()
    assert len(ImageMaskFolders(root=str(tmp_path), preset="drive", fov=None, image_size=16).load()) == 5


@pytest.mark.parametrize("preset, files, expected_test", [
    ("chase_db1", [(f"Image_{n:02d}{eye}.jpg", f"Image_{n:02d}{eye}_1stHO.png") for n in (1, 2, 11, 14) for eye in "LR"],
     ["Image_11L", "Image_11R", "Image_14L", "Image_14R"]),
    ("stare", [(f"stare-images/im{n:04d}.ppm", f"labels-ah/im{n:04d}.ah.ppm") for n in (1, 44, 162, 324)], ["im0162", "im0324"]),
    ("hrf", [(f"images/{n:02d}_{c}.JPG", f"manual1/{n:02d}_{c}.tif") for n in (1, 5, 6, 15) for c in ("dr", "g")],
     ["06_dr", "06_g", "15_dr", "15_g"]),
])
def test_official_split_of_single_folder_sets(tmp_path, preset, files, expected_test):
    """CHASE_DB1, STARE and HRF ship one folder: their conventional test parts are chosen by name."""
    for i, (image, mask) in enumerate(files):
        _rgb(tmp_path / image, i)
        _mask(tmp_path / mask)
    data = ImageMaskFolders(root=str(tmp_path), preset=preset, fov=None, image_size=16).load()
    test = sorted(Path(data.ids[i]).stem for i in data.in_part("test"))
    assert test == expected_test and len(data.in_part("train")) == len(files) - len(expected_test)


def test_generic_folders_layout_has_a_split_per_folder(tmp_path):
    """preset=folders: root/{train,test}/images with masks of the same stem (any suffix) in .../masks."""
    for split, names in (("train", ["a", "b", "c"]), ("test", ["d", "e"])):
        for i, name in enumerate(names):
            _rgb(tmp_path / split / "images" / f"{name}.jpg", i)
            _mask(tmp_path / split / "masks" / f"{name}.png")
    data = ImageMaskFolders(root=str(tmp_path), preset="folders", image_size=16).load()
    assert data.parts == ["train"] * 3 + ["test"] * 2 and data.fov.all()
    # a custom layout with {split} and its own folder names
    custom = ImageMaskFolders(root=str(tmp_path), images="{split}/images", masks="{split}/masks", mask_name="{stem}.png",
                              split_folders={"train": "train", "test": "test"}, image_size=16).load()
    assert custom.parts == data.parts
    with pytest.raises(ConfigError, match="split_folders"):
        ImageMaskFolders(root=str(tmp_path), images="{split}/images", masks="{split}/masks", mask_name="{stem}.png")
