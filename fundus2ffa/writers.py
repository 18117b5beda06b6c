"""The one place files are written: PNG (8 and 16 bit), MP4 / GIF videos, frame folders, JSON, CSV and
text (HTML, YAML, Markdown), each atomically (issue 19, item 6).

Every writer goes through :func:`atomic_write`: the content goes to a hidden temporary file beside the
target (same folder, so the same filesystem; the name carries a random part, so DDP ranks writing the
same file, or two runs, never share one), is flushed (and fsynced where asked), then ``os.replace``d
over the target. A target therefore always holds the previous complete file or the new complete one;
the temporary file is removed on any error, ``KeyboardInterrupt`` and the :class:`Stopped` of a
SIGTERM included. A kill -9 can leave one; :func:`remove_temp_files` removes those (the command that
writes into a folder calls it at its next start; checkpoints at the start of training).

Temporary names: ``.<target name>.<12 hex>.part`` (videos add their suffix for the encoder; :func:`temp_path`,
:data:`TEMP_RE`).

A full disk (ENOSPC, EDQUOT) is a :class:`~fundus2ffa.errors.OutputError` naming the folder, the
bytes free there and the fix; the previous file, if any, is unchanged.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fundus2ffa.errors import ConfigError, OutputError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".part"
TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.part(\.[A-Za-z0-9]+)?$")
NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
VIDEO_FORMATS = ("mp4", "gif", "png")  # png: a folder of frame_XXX.png


# ----------------------------------------------------------------------------------------- the core
def temp_path(target: Path) -> Path:
    """A unique hidden temporary name beside ``target`` (removed by :func:`remove_temp_files`)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


@contextmanager
def atomic_write(target: str | Path, fsync: bool = False, what: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it over ``target``, on any error
    remove it. ``fsync``: make the content and the rename durable (checkpoints). ``what`` names the
    kind of file in the full-disk message."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {target.parent} for {target.name}: {exc.strerror or exc}") from None
    tmp = temp_path(target)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if _is_no_space(exc):
            free = free_bytes(target.parent)
            raise OutputError(
                f"no space left in {target.parent} while writing {what or 'the file'} {target.name}: more than {written} "
                f"bytes needed" + (f", {free} bytes free there" if free is not None else "")
                + f"; the previous {target.name} (if any) is unchanged. Free space there or write to a larger disk."
            ) from None
        raise
    if fsync:
        fsync_folder(target.parent)


def _is_no_space(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT, also when a writer wraps it (torch.save's zip writer raises RuntimeError
    "... unexpected pos ..." when the disk fills)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        if isinstance(exc, RuntimeError) and ("unexpected pos" in str(exc) or "No space left" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temp_files(folder: str | Path, older_than: float | None = None, recursive: bool = False) -> list[Path]:
    """Remove the temporary files an interrupted writer left in ``folder`` (e.g. a kill -9); with
    ``older_than`` (a ``time.time()``) only those last modified before it (another process may be
    writing now)."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for path in folder.rglob("*") if recursive else folder.iterdir():
            if TEMP_RE.match(path.name) and path.is_file():
                if older_than is not None and path.stat().st_mtime >= older_than:
                    continue
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.info("removed %d unfinished temporary file(s) of an interrupted run in %s", len(removed), folder)
    return removed


def hard_link(source: str | Path, target: str | Path) -> bool:
    """Make ``target`` a second name of ``source``'s file (a hard link: no copy, no extra disk), atomically
    (the link is made under a temporary name, then renamed over ``target``). False, with nothing changed,
    where the filesystem has no hard links (FAT, some network mounts) or ``source`` is elsewhere; the
    caller then writes a file instead. A later atomic replacement of ``source`` leaves ``target`` holding
    the old content: the two names part without either being rewritten."""
    source, target = Path(source), Path(target)
    tmp = temp_path(target)
    try:
        os.link(source, tmp)
    except OSError:
        return False
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)
    return True


def write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> Path:
    path = Path(path)
    with atomic_write(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Text (HTML, YAML, Markdown, logs), UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------- images
def write_png(path: str | Path, array: np.ndarray) -> Path:
    """An H x W or H x W x 3 uint8 array, or an H x W uint16 array (16-bit grey), as PNG."""
    from PIL import Image

    path = Path(path)
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError(f"16-bit PNGs are grey (H x W), got shape {array.shape}")
        image = Image.fromarray(array.astype(np.uint16))
    elif array.dtype == np.uint8:
        image = Image.fromarray(array)
    else:
        raise ValueError(f"write_png takes uint8 or uint16 arrays, got {array.dtype}")
    with atomic_write(path, what="the image") as tmp:
        image.save(tmp, format="PNG")
    return path


# ----------------------------------------------------------------------------------------- videos
def check_video_format(video_format: str) -> None:
    """The format is known and, for MP4, the encoder is there (checked before anything is written)."""
    if video_format not in VIDEO_FORMATS:
        raise ConfigError(f"video format must be one of {'|'.join(VIDEO_FORMATS)}, got {video_format!r}")
    if video_format == "mp4":
        try:
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
        except Exception as exc:  # noqa: BLE001 - any failure means no encoder
            raise ConfigError(f"MP4 output needs ffmpeg (pip install imageio-ffmpeg): {exc}; or write gif / png frames") from None


def write_video(path: str | Path, frames: list[np.ndarray], fps: float, video_format: str) -> Path:
    """H x W (grey) or H x W x 3 uint8 frames as an animated GIF or an H.264 MP4; returns the path.

    The yuv420p encoder needs even sides: an odd side is padded by one edge pixel for the encoder,
    and the true H x W is written into the MP4's metadata (``comment``: ``fundus2ffa geometry HxW``)
    and cropped back by :func:`read_video` (issue 21, item 2: the documented geometry)."""
    import imageio.v2 as imageio

    path = Path(path)
    if video_format not in ("gif", "mp4"):
        raise ConfigError(f"video format must be gif or mp4, got {video_format!r}")
    rgb = [np.repeat(f[..., None], 3, axis=2) if f.ndim == 2 else f for f in frames]
    height, width = rgb[0].shape[:2]
    with atomic_write(path, what="the video") as tmp:
        tmp = tmp.with_name(tmp.name + path.suffix)  # the encoders choose the container by suffix
        try:
            if video_format == "gif":
                imageio.mimsave(tmp, rgb, format="GIF", duration=1000.0 / fps, loop=0)
            else:
                pad = ((0, height % 2), (0, width % 2), (0, 0))
                writer = imageio.get_writer(
                    tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1,
                    quality=8, output_params=["-metadata", f"comment=fundus2ffa geometry {height}x{width}"],
                )
                try:
                    for frame in rgb:
                        writer.append_data(np.pad(frame, pad, mode="edge"))
                finally:
                    writer.close()
            os.replace(tmp, tmp.with_name(tmp.name[: -len(path.suffix)]))
        finally:
            tmp.unlink(missing_ok=True)
    return path


def video_geometry(path: str | Path) -> tuple[int, int] | None:
    """The true (H, W) an MP4 written by :func:`write_video` holds, read from its ``comment`` metadata
    (ffmpeg's own listing; imageio does not return comments); None when it says nothing."""
    import subprocess

    import imageio_ffmpeg

    listing = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                             capture_output=True, text=True, timeout=60).stderr
    match = re.search(r"comment\s*:\s*fundus2ffa geometry (\d+)x(\d+)", listing)
    return (int(match.group(1)), int(match.group(2))) if match else None


def read_video(path: str | Path) -> list[np.ndarray]:
    """The frames of a video written by :func:`write_video`, at the geometry it was given (MP4: the
    encoder's padding cropped off)."""
    import imageio.v2 as imageio

    frames = [np.asarray(f) for f in imageio.mimread(str(path), memtest=False)]
    if str(path).lower().endswith(".mp4"):
        geometry = video_geometry(path)
        if geometry is not None:
            frames = [f[: geometry[0], : geometry[1]] for f in frames]
    return frames


def write_frames(path_stem: str | Path, frames: list[np.ndarray], video_format: str, fps: float) -> str:
    """One generated video: ``<stem>.mp4`` / ``<stem>.gif``, or the folder ``<stem>/frame_XXX.png``;
    returns what was written."""
    path_stem = Path(path_stem)
    if video_format == "png":
        for t, frame in enumerate(frames):
            write_png(path_stem / f"frame_{t:03d}.png", frame)
        return str(path_stem)
    return str(write_video(path_stem.with_name(f"{path_stem.name}.{video_format}"), frames, fps, video_format))


# ----------------------------------------------------------------------------------------- tables
def strict_json(value: Any) -> Any:
    """NaN / inf (an empty field of view scores NaN) become null: the JSON stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json(path: str | Path, payload: Any, sort_keys: bool = True, default: Callable | None = None) -> Path:
    """Strict JSON (NaN and inf written as null), indented."""
    text = json.dumps(strict_json(payload), indent=2, sort_keys=sort_keys, allow_nan=False, default=default)
    return write_text(path, text)


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> Path | None:
    """Rows as CSV with a header (the union of the rows' keys in first-seen order unless ``columns``);
    nothing is written for no rows."""
    if not rows and columns is None:
        return None
    fields = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())
