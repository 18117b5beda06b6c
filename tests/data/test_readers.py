"""Readers of on-disk layouts: generic paired folders/manifests, Isfahan MISP (on a synthetic export in
its layout, quirks included) and the real UWF-SLO two-phase eyes (tests/fixtures/uwf_slo_fa_phases).

Every bad input must fail with a DataError/ConfigError that names the file or key and says the fix.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import UWF, UWF_SIZE
from fundus2ffa.data.readers import IsfahanMISP, PairedFolder, UWFPhases
from fundus2ffa.data.readers.isfahan import FUNDUS2ANGIO_IDS
from fundus2ffa.data.synthetic.isfahan_export import ALIGNMENT_FILE, export_isfahan
from fundus2ffa.data.synthetic.retina import synthesize_eye
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.priors.fov import fov_mask

UWF_DATA = UWF
HEIGHT, WIDTH = 72, 90  # Isfahan's 576 x 720, scaled down


def eye(category: str, number: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A synthetic (CF, late FFA, category), distinct for every (category, number)."""
    seed = number + (1000 if category == "normal" else 0)
    drawn = synthesize_eye(seed, HEIGHT, width=WIDTH, abnormal=category == "abnormal", times=(300.0,))
    return drawn.cf, drawn.late, category


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def closest(image: np.ndarray, candidates: dict) -> object:
    """Key of the candidate image nearest to ``image`` (JPEG changes an image only slightly)."""
    return min(candidates, key=lambda key: mean_abs_difference(image, candidates[key]))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.astype(bool) & b.astype(bool)).sum() / (a.astype(bool) | b.astype(bool)).sum())


def write_pair(root: Path, name: str, cf: np.ndarray, ffa: np.ndarray, cf_dir="cf", ffa_dir="ffa") -> None:
    for sub, image in ((cf_dir, cf), (ffa_dir, ffa)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / sub / name)


# ---------------------------------------------------------------------------------------------------
# PairedFolder: root/cf/* + root/ffa/* by stem, or a CSV manifest


@pytest.fixture
def paired_root(tmp_path):
    root = tmp_path / "pairs"
    for number in (1, 2):
        cf, ffa, _ = eye("abnormal", number)
        write_pair(root, f"eye{number}.png", cf, ffa)
    return root


def test_paired_folder_matches_by_stem_and_loads(paired_root):
    reader = PairedFolder(root=paired_root)
    records = reader.records()
    assert [r.id for r in records] == ["eye1", "eye2"]
    reader.check(records)
    sample = reader.load(records[0])
    cf, ffa, _ = eye("abnormal", 1)
    np.testing.assert_array_equal(sample.cf, cf)
    np.testing.assert_array_equal(sample.ffa, ffa)


def test_paired_folder_custom_sub_folders(tmp_path):
    cf, ffa, _ = eye("normal", 1)
    write_pair(tmp_path, "a.png", cf, ffa, cf_dir="fundus", ffa_dir="angio")
    assert [r.id for r in PairedFolder(root=tmp_path, cf_dir="fundus", ffa_dir="angio").records()] == ["a"]


def test_paired_folder_missing_data_directory(tmp_path):
    with pytest.raises(DataError, match=r"data folder not found: .*nowhere\. Set data\.reader\.root"):
        PairedFolder(root=tmp_path / "nowhere").records()


def test_paired_folder_missing_sub_folder(tmp_path):
    (tmp_path / "cf").mkdir()
    with pytest.raises(DataError, match=r"no 'ffa/' folder in .*data\.reader\.ffa_dir.*data\.reader\.manifest"):
        PairedFolder(root=tmp_path).records()


def test_paired_folder_empty_folder(tmp_path):
    (tmp_path / "cf").mkdir()
    (tmp_path / "ffa").mkdir()
    with pytest.raises(DataError, match=r"no images .* in .*cf\. Put the images there"):
        PairedFolder(root=tmp_path).records()


def test_paired_folder_needs_root_or_manifest():
    with pytest.raises(ConfigError, match=r"data\.reader\.root .* or data\.reader\.manifest"):
        PairedFolder()


@pytest.mark.parametrize("orphan_side", ["cf", "ffa"])
def test_paired_folder_missing_partner(paired_root, orphan_side):
    (paired_root / ("ffa" if orphan_side == "cf" else "cf") / "eye2.png").unlink()
    with pytest.raises(DataError) as error:
        PairedFolder(root=paired_root).records()
    message = str(error.value)
    assert f"{orphan_side}/eye2.png has no partner" in message
    assert "eye2.<png|jpg|...>" in message and "Add the partner image or remove this one" in message


def test_paired_folder_two_files_with_one_stem(paired_root):
    Image.fromarray(eye("abnormal", 1)[0]).save(paired_root / "cf" / "eye1.jpg")
    ambiguous = r"cf/eye1\.(jpg|png) and .*cf/eye1\.(png|jpg) share the name 'eye1'.*remove or rename one"
    with pytest.raises(DataError, match=ambiguous):
        PairedFolder(root=paired_root).records()


def test_pair_size_mismatch_fails_check_unless_resampled(paired_root):
    Image.fromarray(np.zeros((HEIGHT // 2, WIDTH // 2), np.uint8)).save(paired_root / "ffa" / "eye2.png")
    reader = PairedFolder(root=paired_root)
    with pytest.raises(DataError) as error:
        reader.check(reader.records())
    message = str(error.value)
    assert "pair 'eye2'" in message and "cf/eye2.png" in message and "ffa/eye2.png" in message
    assert f"{WIDTH}x{HEIGHT}" in message and "data.reader.resize_ffa_to_cf=true" in message

    resampling = PairedFolder(root=paired_root, resize_ffa_to_cf=True)
    resampling.check(resampling.records())
    assert resampling.load(resampling.records()[1]).ffa.shape == (HEIGHT, WIDTH)


def test_grey_cf_fails_before_training(paired_root):
    Image.fromarray(eye("abnormal", 2)[1]).save(paired_root / "cf" / "eye2.png")  # an angiogram as CF
    reader = PairedFolder(root=paired_root)
    records = reader.records()
    reader.check(records, decode=False)  # headers are fine: the content is what is wrong
    for call in (lambda: reader.check(records), lambda: reader.load(records[1])):
        with pytest.raises(DataError) as error:
            call()
        message = str(error.value)
        assert "cf/eye2.png is greyscale" in message and "not swapped" in message and "allow_grey_cf" in message
    assert PairedFolder(root=paired_root, allow_grey_cf=True).load(records[1]).cf.shape == (HEIGHT, WIDTH, 3)


def test_corrupt_image_fails_check(paired_root):
    (paired_root / "ffa" / "eye2.png").write_bytes(b"\x89PNG but then garbage" * 4)
    reader = PairedFolder(root=paired_root)
    with pytest.raises(DataError, match=r"cannot read image .*ffa/eye2\.png.*re-export it or remove it"):
        reader.check(reader.records())


def test_truncated_jpeg_fails_at_load(tmp_path):
    cf, ffa, _ = eye("abnormal", 1)
    write_pair(tmp_path, "eye1.jpg", cf, ffa)
    path = tmp_path / "cf" / "eye1.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    reader = PairedFolder(root=tmp_path)
    with pytest.raises(DataError, match=r"cannot read image .*cf/eye1\.jpg.*truncated.*re-export it or remove it"):
        reader.load(reader.records()[0])


def write_manifest(folder: Path, text: str) -> Path:
    path = folder / "pairs.csv"
    path.write_text(text)
    return path


def test_manifest_columns_and_relative_paths(paired_root):
    manifest = write_manifest(
        paired_root,
        "cf,ffa,id,category,group,split\n"
        "cf/eye1.png,ffa/eye1.png,p1-left,abnormal,p1,train\n"
        "\n"
        "cf/eye2.png,ffa/eye2.png,,normal,,test\n",
    )
    records = PairedFolder(manifest=manifest).records()
    assert [(r.id, r.category, r.split_group, r.split) for r in records] == [
        ("p1-left", "abnormal", "p1", "train"),
        ("eye2", "normal", "eye2", "test"),
    ]
    assert records[0].cf == paired_root / "cf" / "eye1.png"
    # a relative manifest is looked up under root
    assert [r.id for r in PairedFolder(root=paired_root, manifest="pairs.csv").records()] == ["p1-left", "eye2"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("cf,ffa,patient\ncf/eye1.png,ffa/eye1.png,7\n",
         r"pairs\.csv has unknown columns \['patient'\]; allowed columns are cf, ffa, id, category, group, split"),
        ("cf,angiogram\ncf/eye1.png,ffa/eye1.png\n", r"unknown columns \['angiogram'\]"),
        ("cf,id\ncf/eye1.png,a\n", r"pairs\.csv lacks the column\(s\) \['ffa'\]; its header must name cf and ffa"),
        ("cf,ffa\n", r"pairs\.csv has no rows; add one row per CF/FFA pair"),
        ("", r"pairs\.csv lacks the column\(s\) \['cf', 'ffa'\]"),
        ("cf,ffa\ncf/eye1.png,ffa/missing.png\n", r"pairs\.csv line 2: ffa image .*ffa/missing\.png not found\. Paths "
         r"are relative to the manifest's folder"),
        ("cf,ffa\ncf/eye1.png,\n", r"pairs\.csv line 2: empty 'ffa' cell"),
        ("cf,ffa\ncf/eye1.png\n", r"pairs\.csv line 2: empty 'ffa' cell; give the image path relative to"),
        ("cf,ffa\ncf/eye1.png,ffa/eye1.png,x\n", r"line 2 has more cells than the header has columns; remove"),
        ("cf,ffa,split\ncf/eye1.png,ffa/eye1.png,bad\n", r"line 2: split 'bad' is not one of train, val, test"),
        ("cf,ffa\ncf/eye1.png,ffa/eye1.png\ncf/eye1.png,ffa/eye2.png\n",
         r"line 3: pair id 'eye1' already used on line 2.*fill the id column"),
    ],
)
def test_manifest_errors_name_file_and_fix(paired_root, text, message):
    with pytest.raises(DataError, match=message):
        PairedFolder(manifest=write_manifest(paired_root, text)).records()


def test_manifest_not_found(tmp_path):
    with pytest.raises(DataError, match=r"pair manifest not found: .*absent\.csv\. Set data\.reader\.manifest"):
        PairedFolder(manifest=tmp_path / "absent.csv").records()


# ---------------------------------------------------------------------------------------------------
# Isfahan MISP, on a synthetic export in its layout


@pytest.fixture(scope="module")
def isfahan(tmp_path_factory):
    """ABNORMAL 1-28 and NORMAL 1-30 (so the 10/11 swap, pair 30 and Fundus2Angio's ids all exist)."""
    eyes = {f"abnormal/{n}": eye("abnormal", n) for n in range(1, 29)}
    eyes |= {f"normal/{n}": eye("normal", n) for n in range(1, 31)}
    root = export_isfahan(tmp_path_factory.mktemp("isfahan"), list(eyes.values()))
    return root, eyes


def test_isfahan_reverses_naming_and_fixes_quirks(isfahan):
    root, eyes = isfahan
    reader = IsfahanMISP(root)
    records = reader.records()
    reader.check(records)
    assert len(records) == 57 and "normal/30" not in {r.id for r in records}  # pair 30 left out
    assert {r.id: (r.cf.name, r.ffa.name) for r in records if r.id in ("abnormal/3", "normal/3")} == {
        "abnormal/3": ("3.jpg", "3-3.jpg"),
        "normal/3": ("3-3.jpg", "3.jpg"),
    }
    ffa_by_id = {key: ffa for key, (_, ffa, _) in eyes.items()}
    for record in records:
        assert (record.category, record.group) == (record.id.split("/")[0], record.id)
        sample = reader.load(record)  # read_cf: the CF of every record is the colour image
        assert mean_abs_difference(sample.cf, eyes[record.id][0]) < 3
        assert closest(sample.ffa, ffa_by_id) == record.id, record.id
    assert {r.id: r.ffa.name for r in records}.items() >= {"normal/10": "11.jpg", "normal/11": "10.jpg"}.items()


def test_isfahan_quirks_are_in_the_export(isfahan):
    """Without the fixes, NORMAL 10/11 carry each other's angiogram and pair 30 does not match."""
    root, eyes = isfahan
    reader = IsfahanMISP(root, fix_normal_10_11=False, exclude=[])
    by_id = {r.id: r for r in reader.records()}
    assert len(by_id) == 58
    ffa_by_id = {key: ffa for key, (_, ffa, _) in eyes.items()}
    assert closest(reader.load(by_id["normal/10"]).ffa, ffa_by_id) == "normal/11"
    assert closest(reader.load(by_id["normal/11"]).ffa, ffa_by_id) == "normal/10"
    pair_30 = reader.load(by_id["normal/30"])
    assert mean_abs_difference(pair_30.ffa, eyes["normal/30"][1]) > 5


def test_fundus2angio_data_keeps_normal_10_11_as_released_as_its_code_does(isfahan):
    """Issue 20 item 5: the 10/11 swap is a quirk of the release (noted with its alignment file), in no
    paper or code; Fundus2Angio's random_crop.py reads NORMAL/11-11.jpg (fundus) with NORMAL/11.jpg
    (angiogram) as released, so its data config trains on that pair; the generic isfahan config re-pairs."""
    from hydra.utils import instantiate

    from conftest import compose_run

    root, eyes = isfahan
    ffa_by_id = {key: ffa for key, (_, ffa, _) in eyes.items()}
    paper = instantiate(compose_run(["data=isfahan_fundus2angio", f"data.reader.root={root}"]).data.reader)
    by_id = {r.id: r for r in paper.records()}
    assert len(by_id) == 17 + 14 and by_id["normal/11"].split == "train"
    assert (by_id["normal/11"].cf.name, by_id["normal/11"].ffa.name) == ("11-11.jpg", "11.jpg")  # the code's files
    assert closest(paper.load(by_id["normal/11"]).ffa, ffa_by_id) == "normal/10"  # eye 10's angiogram, as released
    generic = instantiate(compose_run(["data=isfahan", f"data.reader.root={root}"]).data.reader)
    fixed = {r.id: r for r in generic.records()}["normal/11"]
    assert fixed.ffa.name == "10.jpg" and closest(generic.load(fixed).ffa, ffa_by_id) == "normal/11"
    repaired = instantiate(compose_run(["data=isfahan_fundus2angio", f"data.reader.root={root}",
                                        "data.reader.fix_normal_10_11=true"]).data.reader)
    assert {r.id: r for r in repaired.records()}["normal/11"].ffa.name == "10.jpg"


def test_isfahan_ids_selection(isfahan):
    root, _ = isfahan
    records = IsfahanMISP(root, ids=list(FUNDUS2ANGIO_IDS)).records()
    assert [r.id for r in records] == list(FUNDUS2ANGIO_IDS)
    assert [r.id for r in IsfahanMISP(root, ids=["NORMAL/04", " abnormal/ 5"]).records()] == ["abnormal/5", "normal/4"]
    assert [r.id for r in IsfahanMISP(root, ids="normal/7").records()] == ["normal/7"]
    with pytest.raises(DataError, match=r"data\.reader\.ids names abnormal/29, but .* has no such pair.*Fix the id"):
        IsfahanMISP(root, ids=["abnormal/29"]).records()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ids": ["4"]}, r"data\.reader\.ids: '4' is not an Isfahan pair id; write it as abnormal/<N> or normal/<N>"),
        ({"exclude": ["normal-30"]}, r"data\.reader\.exclude: 'normal-30' is not an Isfahan pair id"),
        ({"ids": ["normal/30"]}, r"data\.reader\.ids selects \['normal/30'\], which data\.reader\.exclude leaves out"),
    ],
)
def test_isfahan_bad_ids_name_the_key(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        IsfahanMISP(tmp_path, **kwargs)


@pytest.mark.parametrize("folder_case", ["lower", "title"])
def test_isfahan_folder_case_does_not_matter(tmp_path, folder_case):
    root = export_isfahan(tmp_path, [eye("abnormal", 1), eye("normal", 1)], folder_case=folder_case)
    assert {p.name for p in root.iterdir() if p.is_dir()} == {getattr(c, folder_case)() for c in ("abnormal", "normal")}
    reader = IsfahanMISP(root)
    assert [r.id for r in reader.records()] == ["abnormal/1", "normal/1"]
    assert reader.load(reader.records()[1]).cf.shape == (HEIGHT, WIDTH, 3)


def test_isfahan_alignment_maps_cf_onto_ffa(tmp_path):
    """The export shifts every CF by (6, -4) px; the alignment lines (CF -> FFA in ABNORMAL, FFA -> CF in
    NORMAL, so inverted by the reader) must bring it back onto the FFA grid."""
    eyes = {"abnormal/1": eye("abnormal", 1), "normal/1": eye("normal", 1)}
    root = export_isfahan(tmp_path, list(eyes.values()), cf_shift=(6, -4))
    aligned = IsfahanMISP(root, alignment=ALIGNMENT_FILE)
    unaligned = IsfahanMISP(root)
    for record, plain in zip(aligned.records(), unaligned.records()):
        np.testing.assert_allclose(record.affine, [[1, 0, -6], [0, 1, 4]], atol=1e-9)
        sample, shifted = aligned.load(record), unaligned.load(plain)
        ffa_fov = fov_mask(sample.ffa)
        assert iou(fov_mask(sample.cf), ffa_fov) > 0.98 > 0.9 > iou(fov_mask(shifted.cf), ffa_fov)
        interior = (slice(8, -8), slice(8, -8))
        drawn = eyes[record.id][0][interior]
        aligned_error = mean_abs_difference(sample.cf[interior], drawn)
        assert aligned_error < 5 and 3 * aligned_error < mean_abs_difference(shifted.cf[interior], drawn)


def test_isfahan_identity_alignment_and_swapped_lines(isfahan):
    """The 10/11 lines name the files that hold each eye, so they match the fixed pairs."""
    root, _ = isfahan
    records = IsfahanMISP(root, alignment=root / ALIGNMENT_FILE).records()
    assert all(np.allclose(r.affine, [[1, 0, 0], [0, 1, 0]]) for r in records)


def test_isfahan_alignment_errors(tmp_path):
    root = export_isfahan(tmp_path, [eye("abnormal", 1), eye("normal", 1)])
    with pytest.raises(DataError, match=r"alignment file not found: .*nope\.csv.*data\.reader\.alignment"):
        IsfahanMISP(root, alignment="nope.csv").records()
    lines = (root / ALIGNMENT_FILE).read_text().splitlines()
    (root / ALIGNMENT_FILE).write_text(lines[0] + "\n")
    with pytest.raises(DataError, match=r"no line for pair\(s\) \['normal/1'\].*data\.reader\.alignment=null"):
        IsfahanMISP(root, alignment=ALIGNMENT_FILE).records()
    (root / ALIGNMENT_FILE).write_text(lines[0] + "\nnormal/1.jpg,normal/1-1.jpg,1,0,zero,0,1,0,\n")
    with pytest.raises(DataError, match=r"alignment\.csv line 2 .*two image names and six numbers\. Fix or delete"):
        IsfahanMISP(root, alignment=ALIGNMENT_FILE).records()


def test_isfahan_swapped_files_fail_as_grey_cf(tmp_path):
    root = export_isfahan(tmp_path, [eye("abnormal", 1)])
    folder = root / "ABNORMAL"
    (folder / "1.jpg").rename(folder / "tmp.jpg")
    (folder / "1-1.jpg").rename(folder / "1.jpg")
    (folder / "tmp.jpg").rename(folder / "1-1.jpg")
    reader = IsfahanMISP(root)
    with pytest.raises(DataError, match=r"ABNORMAL/1\.jpg is greyscale.*not swapped"):
        reader.load(reader.records()[0])


def test_isfahan_missing_partner(tmp_path):
    root = export_isfahan(tmp_path, [eye("abnormal", n) for n in (1, 2)] + [eye("normal", 1)])
    (root / "NORMAL" / "1-1.jpg").unlink()
    with pytest.raises(DataError) as error:
        IsfahanMISP(root).records()
    message = str(error.value)
    assert "normal/1" in message and "NORMAL/1.jpg has no partner" in message
    assert "colour fundus" in message and "NORMAL/1-1.jpg is missing" in message
    assert "data.reader.exclude=[normal/1]" in message
    assert len(IsfahanMISP(root, exclude=["normal/1"]).records()) == 2


def test_isfahan_missing_or_wrong_root(tmp_path):
    with pytest.raises(DataError, match=r"Isfahan data folder not found: .*nowhere\. Set data\.reader\.root"):
        IsfahanMISP(tmp_path / "nowhere").records()
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"no ABNORMAL/ or NORMAL/ folder in .*point data\.reader\.root"):
        IsfahanMISP(tmp_path).records()
    (tmp_path / "NORMAL").mkdir()
    with pytest.raises(DataError, match=r"no images .* in .*NORMAL\. Put the images there"):
        IsfahanMISP(tmp_path).records()


# ---------------------------------------------------------------------------------------------------
# UWF-SLO with early and late FA, the real data


def test_uwf_records_and_splits_from_folders():
    records = UWFPhases(UWF_DATA).records()
    assert [(r.id, r.split) for r in records] == [
        ("train/1", "train"), ("train/2", "train"), ("train/3", "train"), ("train/4", "train"),
        ("test/7", "test"), ("test/8", "test"), ("test/10", "test"),
    ]
    assert all(r.ffa.name == f"{r.cf.stem}.2.png" for r in records)  # late phase by default
    assert all(r.ffa.name == f"{r.cf.stem}.1.png" for r in UWFPhases(UWF_DATA, target="early").records())


def test_uwf_eyes_list_frames_in_temporal_order():
    eyes = UWFPhases(UWF_DATA).eyes()
    assert len(eyes) == 7
    for uwf_eye in eyes:
        assert uwf_eye.phases == ("early", "late")
        assert [f.name for f in uwf_eye.frames] == [f"{uwf_eye.cf.stem}.1.png", f"{uwf_eye.cf.stem}.2.png"]


def test_uwf_loads_pseudo_colour_slo_as_cf():
    reader = UWFPhases(UWF_DATA)
    records = reader.records()
    reader.check(records)
    sample = reader.load(records[0])
    width, height = UWF_SIZE
    assert sample.cf.shape == (height, width, 3) and sample.ffa.shape == (height, width)
    assert sample.cf[..., 0].std() > 10 and sample.cf[..., 1].std() > 10  # red and green carry the image


def test_uwf_missing_frame_and_bad_target(tmp_path):
    for name in ("1.png", "1.1.png"):
        (tmp_path / "train").mkdir(exist_ok=True)
        shutil.copy(UWF_DATA / "train" / name, tmp_path / "train" / name)
    with pytest.raises(DataError, match=r"train/1\.png has no late-phase angiogram: .*train/1\.2\.png is missing"):
        UWFPhases(tmp_path).records()
    with pytest.raises(ConfigError, match=r"data\.reader\.target must be one of early\|late, got 'middle'"):
        UWFPhases(tmp_path, target="middle")


def test_uwf_missing_or_wrong_root(tmp_path):
    with pytest.raises(DataError, match=r"UWF phases data folder not found: .*nowhere\. Set data\.reader\.root"):
        UWFPhases(tmp_path / "nowhere").records()
    with pytest.raises(DataError, match=r"no train/ or test/ folder in .*Point data\.reader\.root at its top folder"):
        UWFPhases(tmp_path).records()
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"no images .* in .*test\. Put the images there"):
        UWFPhases(tmp_path).records()
