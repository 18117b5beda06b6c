"""The configs travel with the package: a built wheel carries conf/ and finds it when installed."""

import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_contains_the_configs_and_finds_them_when_installed(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("fundus2ffa-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fundus2ffa/conf/run.yaml" in names and "fundus2ffa/conf/model/pix2pix.yaml" in names

    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = subprocess.run(
        [sys.executable, "-c", "from fundus2ffa.config import config_dir; print(config_dir())"],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip() == str(target / "fundus2ffa" / "conf")
