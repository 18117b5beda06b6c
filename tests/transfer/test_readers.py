"""Downstream readers: public vessel-set layouts, labels CSV, class folders, named errors."""

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
    data = ImageMaskFolders(root=str(tmp_path), preset="drive", image_size=16).load()
    assert data.images.shape == (2, 3, 16, 16) and data.masks.shape == (2, 16, 16)
    assert set(data.masks.unique().tolist()) == {0, 1} and data.fov.dtype.is_floating_point is False
    (tmp_path / "training/1st_manual/22_manual1.gif").unlink()
    with pytest.raises(DataError, match="expected .*22_manual1.gif"):
        ImageMaskFolders(root=str(tmp_path), preset="drive", image_size=16).load()


def test_chase_layout_and_unknown_preset(tmp_path):
    _rgb(tmp_path / "Image_01L.jpg")
    _mask(tmp_path / "Image_01L_1stHO.png")
    _mask(tmp_path / "Image_01L_2ndHO.png")
    data = ImageMaskFolders(root=str(tmp_path), preset="chase_db1", image_size=16).load()
    assert len(data) == 1
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
