"""The one writer module: atomic writes leave the old file or the new one and never a temporary file;
a full disk names the folder; MP4s keep the documented geometry; leftovers of a killed writer go."""

import errno
import os

import numpy as np
import pytest
from PIL import Image

from fundus2ffa import writers
from fundus2ffa.errors import OutputError


def test_a_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "metrics.json"
    writers.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with writers.atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == '{\n  "a": 1\n}' and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    with pytest.raises(KeyboardInterrupt):
        with writers.atomic_write(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")])
def test_a_full_disk_names_the_folder_and_the_bytes(tmp_path, error):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")
    with pytest.raises(OutputError, match=rf"no space left in {tmp_path} while writing the checkpoint last\.ckpt: more than 4 bytes needed.*bytes free"):
        with writers.atomic_write(target, what="the checkpoint") as tmp:
            tmp.write_bytes(b"half")
            raise error
    assert target.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_png_8_and_16_bit(tmp_path):
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    writers.write_png(tmp_path / "a.png", grey16)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), grey16)
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    writers.write_png(tmp_path / "b.png", rgb)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), rgb)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        writers.write_png(tmp_path / "c.png", rgb.astype(np.float32))


def test_mp4_of_odd_sides_reads_back_at_its_geometry(tmp_path):
    frames = [np.full((33, 47), 40 * i, np.uint8) for i in range(4)]
    path = writers.write_video(tmp_path / "v.mp4", frames, 4, "mp4")
    assert writers.video_geometry(path) == (33, 47)
    back = writers.read_video(path)
    assert len(back) == 4 and back[0].shape == (33, 47, 3)
    assert abs(int(back[2][..., 0].mean()) - 80) <= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_leftovers_of_a_killed_writer_are_removed_and_others_kept(tmp_path):
    old = tmp_path / ".eye.png.0123456789ab.part"
    video = tmp_path / ".v.mp4.0123456789ab.part.mp4"
    fresh = tmp_path / ".eye2.png.abcdef012345.part"
    mine = tmp_path / "eye.part"  # not a writer's temporary name: never touched
    for path in (old, video, fresh, mine):
        path.write_bytes(b"x")
    for path in (old, video, mine):
        os.utime(path, (1e9, 1e9))
    removed = writers.remove_temp_files(tmp_path, older_than=1.5e9)
    assert sorted(p.name for p in removed) == sorted([old.name, video.name])
    assert fresh.exists() and mine.exists()
