"""Write synthetic FFA videos in the Fundus2Video CSV layout (reference_spec section 4.2).

The layout under ``root``::

    data.csv                                one row per FA frame (columns below)
    cf/<pid_eye>.png                        the colour fundus photograph of the eye (RGB)
    fa/<pid_eye>/<level_1 as 3 digits>.png  the FA frames (grey)
    masks/<pid_eye>_leakage.png             leakage ground truth at the eye's last frame (0 or 255)

CSV columns: ``pid_eye`` (one video = one eye, ``<orgid>_<OD|OS>``), ``orgid`` (patient,
``P0000`` ...; a patient may have both eyes), ``Phase``, ``level_1`` (temporal order key: the frame's
rank in time, 0 ...), ``fa_rigid`` (FA frame path), ``co_rigid`` (CF path); paths are relative to the
CSV's folder. Two extra columns the Fundus2Video code ignores: ``time_s`` (seconds after injection)
and ``category`` (normal/abnormal).

Phase codes: the Fundus2Video code drops A and C and merges AV into V without saying what the codes
mean (section 4.2, [D]). Here they follow the angiographic phases by time: C (choroidal flush, before
the arteries fill, t < 11 s), A (arterial, < 18 s), AV (arteriovenous, laminar venous flow, < 30 s),
V (venous, < 120 s) and L (late). Frames are drawn per synthetic phase (arterial, venous, late), so
every video has rows the reader drops (C/A) or merges (AV).
"""

import csv
from pathlib import Path

import numpy as np

from fundus2ffa.writers import write_png
from fundus2ffa.data.synthetic.retina import ARTERIAL_END_S, PHASES, VENOUS_END_S, eye_seed, synthesize_eye

CSV_NAME = "data.csv"
CSV_COLUMNS = ("pid_eye", "orgid", "Phase", "level_1", "fa_rigid", "co_rigid", "time_s", "category")
PHASE_TIME_WINDOWS = {
    "arterial": (9.0, ARTERIAL_END_S),
    "venous": (ARTERIAL_END_S, VENOUS_END_S),
    "late": (VENOUS_END_S, 600.0),
}
"""Seconds after injection over which each synthetic phase's frames are spread."""
PHASE_CODE_ENDS = (("C", 11.0), ("A", 18.0), ("AV", 30.0), ("V", VENOUS_END_S))


def phase_code(time_s: float) -> str:
    """Fundus2Video-style phase code of a frame at ``time_s``: C, A, AV, V or L (see the module notes)."""
    for code, end in PHASE_CODE_ENDS:
        if time_s < end:
            return code
    return "L"


def _frame_times(seed: int, frames_per_phase: int) -> np.ndarray:
    """Increasing frame times: each phase window cut into ``frames_per_phase`` equal slots, one jittered
    frame per slot, rounded to the millisecond as written to the CSV."""
    rng = np.random.default_rng([seed, 3])
    times = []
    for phase in PHASES:
        start, end = PHASE_TIME_WINDOWS[phase]
        slot = (end - start) / frames_per_phase
        times += [start + (k + rng.uniform(0.1, 0.9)) * slot for k in range(frames_per_phase)]
    return np.round(np.asarray(times), 3)


def export_video_csv(
    root: Path,
    num_eyes: int,
    size: int = 256,
    frames_per_phase: int = 4,
    seed: int = 0,
    patients: int | None = None,
) -> Path:
    """Draw ``num_eyes`` synthetic eyes with FA videos and write them under ``root``; return the CSV path.

    Eye ``i`` is ``synthesize_eye(eye_seed(seed, i), ...)`` at its own frame times
    (``frames_per_phase`` in each of arterial, venous and late), with its lesions decided by the seed.
    It belongs to patient ``i % patients``, as the right eye (OD) for the first ``patients`` eyes and
    the left eye (OS) after; ``patients`` defaults to half the eyes (rounded up), so most patients have
    both eyes, as in the GroupShuffleSplit-by-patient of section 4.2.
    """
    root = Path(root)
    patients = (num_eyes + 1) // 2 if patients is None else patients
    if num_eyes < 1 or frames_per_phase < 1:
        raise ValueError(f"need num_eyes >= 1 and frames_per_phase >= 1, got {num_eyes} and {frames_per_phase}")
    if not num_eyes / 2 <= patients <= num_eyes:
        raise ValueError(f"{num_eyes} eyes cannot belong to {patients} patients (each patient has one or two eyes)")
    rows = []
    for index in range(num_eyes):
        orgid = f"P{index % patients:04d}"
        laterality = "OD" if index < patients else "OS"
        pid_eye = f"{orgid}_{laterality}"
        this_seed = eye_seed(seed, index)
        times = _frame_times(this_seed, frames_per_phase)
        eye = synthesize_eye(this_seed, size=size, times=times, laterality=laterality)
        cf_path = Path("cf") / f"{pid_eye}.png"
        write_png(root / cf_path, eye.cf)
        write_png(root / "masks" / f"{pid_eye}_leakage.png", eye.masks["leakage"] * np.uint8(255))
        for level, (time_s, frame) in enumerate(zip(times, eye.frames)):
            fa_path = Path("fa") / pid_eye / f"{level:03d}.png"
            write_png(root / fa_path, frame)
            rows.append({
                "pid_eye": pid_eye,
                "orgid": orgid,
                "Phase": phase_code(float(time_s)),
                "level_1": level,
                "fa_rigid": fa_path.as_posix(),
                "co_rigid": cf_path.as_posix(),
                "time_s": f"{time_s:.3f}",
                "category": eye.category,
            })
    csv_path = root / CSV_NAME
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
