"""FERAtt's data: the MATLAB and CK+ release readers, the dark crop, the synthetic composition and its writers."""

from __future__ import annotations

import math
import os
import warnings

import cv2
import h5py
import numpy as np
import pytest
import scipy.ndimage

from fer_jax.data import composition, labels as label_tables, pipeline, transforms
from fer_jax.data.datasets import create_source
from fer_jax.data.feratt_sources import dark_face
from fer_jax.data.sources import UnreadableImage
from fer_jax.data.synthetic_layouts import face_landmarks, make_synthetic
from fer_jax.errors import ConfigError, DatasetError

COMPOSE = "feratt_compose(64)|to_float"


def raises_one_line(error, match, fn, *args, **kwargs):
    with pytest.raises(error, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def template_landmarks(center=(90.0, 70.0), scale=30.0, roll=0.0) -> np.ndarray:
    """A neutral face's 68 landmarks in pixels, turned by `roll` degrees (y down)."""
    turn = math.radians(roll)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    return face_landmarks("Neutral") @ rotation.T * scale + np.asarray(center)


def write_mat(path: str, images, landmarks, subjects, classes, imsize=None, drop=(), replace=None) -> None:
    """A MATLAB v7.3 file as MATLAB writes one: HDF5 holds each column-major MATLAB array, so h5py sees the
    transpose of the MATLAB array: data [pixels x num] -> (num, pixels), points [68 x 2 x num] -> (num, 2, 68)."""
    images = [np.asarray(im) for im in images]
    matlab = {
        "data": np.stack([im.ravel(order="F") for im in images], axis=1),  # column i = image i (:)
        "points": np.stack(landmarks, axis=2),  # points(:, :, i) = [x y] of image i
        "imsize": np.array([imsize or images[0].shape], float),
        "iactor": np.array(subjects, float)[:, None],
        "iclass": np.array(classes, float)[:, None],
        "num": np.array([[len(images)]], float),
    }
    matlab.update(replace or {})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in matlab.items():
            if key not in drop:
                f.create_dataset(key, data=np.asarray(value).T)


def small_mat(tmp_path, subjects=(3, 7, 3, 12, 5, 7, 9, 1), classes=(1, 2, 3, 4, 5, 6, 7, 8), name="ck/ck.mat",
              drop=(), **replace) -> str:
    """Square 64 px images of one smooth face each; a vertical ramp plus an off-centre mark show orientation."""
    images, points = [], []
    rows = np.arange(64)[:, None] * 2 + np.zeros((1, 64))
    for k in range(len(subjects)):
        image = (rows + 10 * k).astype(np.uint8)
        image[5, 50] = 255  # row 5, column 50: a transposed read moves it to row 50
        images.append(image)
        points.append(template_landmarks((32 + k, 30), 14, roll=5 * k - 10))
    write_mat(os.path.join(str(tmp_path), name), images, points, subjects, classes, drop=drop, replace=replace)
    return str(tmp_path)


# --- Labels and the MATLAB files -----------------------------------------------------------------------

def test_raw_orders_remap_to_ferplus_as_upstream_toferp():
    # pedrodiamel/ferattention torchlib/datasets/fer.py: ck/ckp and bu3dfe/jaffe `toferp` lists.
    np.testing.assert_array_equal(label_tables.remap_permutation(label_tables.CK_RAW, "ferplus"),
                                  [0, 4, 7, 5, 6, 1, 3, 2])
    np.testing.assert_array_equal(label_tables.remap_permutation(label_tables.BU3DFE_RAW, "ferplus"),
                                  [0, 4, 5, 6, 1, 3, 2, 7])


def test_mat_reader_orientation_landmarks_labels_and_folds(tmp_path):
    root = small_mat(tmp_path)
    every = create_source("ck", root, "train", crop="none", nactor=0)
    assert len(every) == 8 and every.class_names == label_tables.FERPLUS
    image = np.asarray(every.decode(every.example(2)["image"]))
    assert image.shape == (64, 64, 3) and image[5, 50, 0] == 255 and image[50, 5, 0] != 255
    np.testing.assert_array_equal(image[:, 0, 0], (np.arange(64) * 2 + 20).astype(np.uint8))  # rows ramp down
    np.testing.assert_allclose(every.example(2)["landmarks"], template_landmarks((34, 30), 14, roll=0), atol=1e-4)
    np.testing.assert_array_equal(every.labels, [0, 4, 7, 5, 6, 1, 3, 2])  # raw 1..8 in CK order -> FER+
    # kfold 1, nactor 2: the sorted unique subjects [1, 3, 5, 7, 9, 12] at positions 2, 3 are held out.
    test = create_source("ck", root, "test", crop="none", kfold=1, nactor=2)
    train = create_source("ck", root, "train", crop="none", kfold=1, nactor=2)
    assert sorted(set(test.subjects)) == [5, 7] and not set(test.subjects) & set(train.subjects)
    assert len(test) + len(train) == 8 and repr(create_source("ck", root, "val", crop="none", kfold=1, nactor=2)) \
        == repr(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([test.labels, train.labels])), np.arange(8))


def test_mat_reader_follows_upstream_reshape_then_transpose_for_non_square_images(tmp_path):
    image = np.arange(40 * 24, dtype=np.uint8).reshape(40, 24)  # 40 rows, 24 columns
    # upstream reads data[i].reshape(imsize).T: right for column-major storage when imsize is (width, height)
    write_mat(str(tmp_path / "ck" / "ck.mat"), [image], [template_landmarks((12, 20), 6)], [1], [1], imsize=(24, 40))
    source = create_source("ck", str(tmp_path), "train", crop="none", nactor=0)
    np.testing.assert_array_equal(np.asarray(source.decode(source.example(0)["image"]))[..., 0], image)


def test_bu3dfe_has_seven_classes_and_refuses_contempt(tmp_path):
    root = small_mat(tmp_path, classes=(1, 2, 3, 4, 5, 6, 7, 1), name="bu3dfe/bu3dfe.mat")
    source = create_source("bu3dfe", root, "train", nactor=0)
    assert source.class_names == label_tables.FERPLUS[:7] and source.num_classes == 7
    np.testing.assert_array_equal(source.labels, [0, 4, 5, 6, 1, 3, 2, 0])
    root = small_mat(tmp_path / "c", classes=(1, 2, 3, 4, 5, 6, 7, 8), name="bu3dfe/bu3dfe.mat")
    raises_one_line(DatasetError, r"class Contempt \(raw class 8\) is not one of the 7 classes", create_source,
                    "bu3dfe", root, "train")


def test_mat_reader_errors(tmp_path):
    raises_one_line(DatasetError, "file .*ck/ck.mat not found; expected <root>/ck/ck.mat: a MATLAB v7.3",
                    create_source, "ck", str(tmp_path), "train")
    os.makedirs(tmp_path / "ck")
    (tmp_path / "ck" / "ck.mat").write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + bytes(200))
    raises_one_line(DatasetError, r"is not a MATLAB v7.3 \(HDF5\) file; save it in MATLAB with save\(..., '-v7.3'\)",
                    create_source, "ck", str(tmp_path), "train")
    cases = [
        (dict(drop=("points",)), r"lacks the field\(s\) \['points'\]"),
        (dict(points=np.zeros((136, 8))), r"field 'points' has shape \(8, 136\), not \(num, 2, 68\)"),
        (dict(iactor=np.ones((5, 1))), "field 'iactor' has 5 values, not num = 8 integers"),
        (dict(data=np.zeros((10, 8))), r"field 'data' has shape \(8, 10\), not \(num, prod\(imsize\)\)"),
        (dict(data=np.full((4096, 8), 300.0)), "field 'data' is not gray levels 0..255"),
        (dict(num=np.array([[0.0]])), "field 'num' is"),
        (dict(classes=(1, 2, 3, 4, 5, 6, 7, 9)), "field 'iclass' holds 9, outside 1..8"),
        (dict(points=np.full((68, 2, 8), np.nan)), "field 'points' holds values that are not finite"),
        (dict(points=np.ones((68, 2, 8))), r"ck.mat#0: no dark crop, the inner eye corners \(landmarks 39 and 42\)"),
    ]
    for k, (kwargs, match) in enumerate(cases):
        root = small_mat(tmp_path / str(k), **kwargs)
        raises_one_line(DatasetError, match, create_source, "ck", root, "train", nactor=0)
    root = small_mat(tmp_path / "ok")
    raises_one_line(ConfigError, "kfold=2 with nactor=3 needs 9 subjects, the data has 6", create_source, "ck", root,
                    "train", kfold=2, nactor=3)
    raises_one_line(ConfigError, "crop must be one of", create_source, "ck", root, "train", crop="tight")
    raises_one_line(DatasetError, "'test' split .* is empty", create_source, "ck", root, "test", nactor=0)


# --- The dark crop -------------------------------------------------------------------------------------

def test_dark_crop_levels_the_eyes_and_keeps_the_face_under_its_landmarks():
    height, width = 140, 180
    ys, xs = np.mgrid[:height, :width]
    image = (40 + 0.6 * xs + 0.3 * ys).astype(np.uint8)  # smooth, so interpolation reproduces it
    landmarks = template_landmarks(center=(120, 60), scale=28, roll=17)  # off-centre and turned
    dark, points = dark_face(image, landmarks)
    assert dark.shape == (128, 128) and dark.dtype == np.uint8
    assert abs(points[39, 1] - points[42, 1]) < 1e-9  # inner eye corners level
    assert points[:, 0].min() > 0 and points[:, 1].max() < 128
    for k in (27, 30, 33, 51, 57, 62):  # nose and mouth: inside the convex hull
        expected = min(image[int(round(landmarks[k, 1])), int(round(landmarks[k, 0]))] / 255 + 0.2, 1) * 255
        assert abs(int(dark[int(round(points[k, 1])), int(round(points[k, 0]))]) - expected) <= 3, k
    assert dark[0, 0] == 0 and dark[127, 127] == 0 and dark[64, 1] == 0  # outside the hull: black
    inside = dark[int(points[30, 1]) - 5:int(points[30, 1]) + 5, int(points[30, 0]) - 5:int(points[30, 0]) + 5]
    assert inside.min() >= 0.2 * 255 - 1


def test_dark_reader_gives_the_crop_and_its_landmarks(tmp_path):
    root = small_mat(tmp_path)
    raw, dark = (create_source("ck", root, "train", crop=crop, nactor=0) for crop in ("none", "dark"))
    face, points = dark_face(raw.face(3), raw.raw_landmarks[3])
    np.testing.assert_array_equal(np.asarray(dark.decode(dark.example(3)["image"]))[..., 0], face)
    np.testing.assert_allclose(dark.example(3)["landmarks"], points, atol=1e-4)
    both = create_source("ck", root, "train", x_org=True, nactor=0)
    assert both.image_entries == ("image", "x_org") and set(both.example(0)) == {"image", "x_org", "label", "landmarks"}
    chain = transforms.parse("cv_resize(64)|gray|to_float")  # FERAtt's evaluation transform
    out = chain(dark.decode(dark.example(0)["image"]), np.random.default_rng(0))
    assert out.shape == (64, 64, 3) and out.dtype == np.float32 and np.array_equal(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[..., 0], cv2.resize(dark.face(0), (64, 64)) / 255.0, atol=1e-6)


# --- The CK+ release -----------------------------------------------------------------------------------

def test_ckplus_release_reader(tmp_path):
    root = make_synthetic("ckplus_release", str(tmp_path / "ckr"), num_train=14, num_test=10, seed=3, image_size=48)
    train, test = create_source("ckplus_release", root, "train"), create_source("ckplus_release", root, "test")
    assert len(train) == 2 * 14 and len(test) == 2 * 10  # first frame Neutral + labelled last frame, unlabelled skipped
    assert len(set(test.subjects)) == 10 and not set(test.subjects) & set(train.subjects)
    assert max(test.subjects) < min(train.subjects)  # the 10 lowest ids are kfold 0
    assert train.example(0)["label"] == 0 and train.names[0].endswith("_00000001.png")
    codes = []
    for name in train.names[1::2]:
        folder = os.path.dirname(name).replace("cohn-kanade-images", "Emotion")
        (emotion,) = os.listdir(folder)
        assert emotion == os.path.basename(name).replace(".png", "_emotion.txt")
        codes.append(int(float(open(os.path.join(folder, emotion)).read())))
    np.testing.assert_array_equal(train.labels[1::2], label_tables.remap_permutation(label_tables.CK_RAW,
                                                                                     "ferplus")[codes])
    landmark_file = train.names[1].replace("cohn-kanade-images", "Landmarks").replace(".png", "_landmarks.txt")
    np.testing.assert_allclose(train.raw_landmarks[1], np.loadtxt(landmark_file))
    assert np.asarray(train.decode(train.example(1)["image"])).shape == (128, 128, 3)
    synthetic = create_source("ckplus_release_synthetic", root, "train", backgrounds=None, count=5)
    rendered = composition.FerattCompose()(synthetic.decode(synthetic.example(4)["x_org"]), np.random.default_rng(0))
    assert synthetic.labels[4] == 4 and rendered.size == (64, 64)
    three = create_source("ckplus_release", root, "test", peak_frames=2, crop="none")
    assert len(three) == 3 * 10 and three.decode(three.example(0)["image"]).size == (63, 48)
    os.remove(landmark_file)
    raises_one_line(DatasetError, "landmarks file .*_landmarks.txt not found", create_source, "ckplus_release",
                    root, "train")
    with open(test.names[1].replace("cohn-kanade-images", "Landmarks").replace(".png", "_landmarks.txt"), "a") as f:
        f.write("1.0 2.0\n")
    raises_one_line(DatasetError, "holds 138 numbers, not 136", create_source, "ckplus_release", root, "test")
    os.remove(test.names[3])
    raises_one_line(DatasetError, "labels frame S.*which .* does not hold", create_source, "ckplus_release", root,
                    "test")


# --- The composition -----------------------------------------------------------------------------------

def _face(seed: int = 0) -> np.ndarray:
    image = (np.random.default_rng(seed).random((160, 200)) * 60 + 120).astype(np.uint8)
    return dark_face(image, template_landmarks((100, 70), 40, roll=6))[0]


def _picture(seed: int = 0, shape=(90, 120)) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (*shape, 3)).astype(np.uint8)
    return cv2.GaussianBlur(noise, (7, 7), 0)


def test_compose_is_deterministic_gray_and_in_range():
    face, back = _face(), _picture()
    one = composition.compose(face, back, np.random.default_rng([5, 1]))
    again = composition.compose(face, back, np.random.default_rng([5, 1]))
    other = composition.compose(face, back, np.random.default_rng([5, 2]))
    for key in ("image", "x_org"):
        assert one[key].shape == (64, 64, 3) and one[key].dtype == np.uint8
        assert np.array_equal(one[key], again[key]) and not np.array_equal(one[key], other[key])
        assert np.array_equal(one[key][..., 0], one[key][..., 1]) and np.array_equal(one[key][..., 0], one[key][..., 2])
    assert one["x_org"][0, 0, 0] == 0 and one["x_org"].max() > 150  # black surround, normalised face
    assert one["image"].std() > 1


def test_x_org_is_the_clean_face_at_the_composite_geometry():
    face, back = _face(1), _picture(1)
    options = composition.GeneratorOptions(illuminate=False)
    for seed in range(6):
        parts = composition.generate(face, back, np.random.default_rng(seed), options)
        clean = composition.generate(face, None, np.random.default_rng(seed), options, role="x_org")
        mask = parts["mask"]
        assert set(clean) == {"x_org", "mask"} and np.array_equal(mask, clean["mask"]) and 0.1 < mask.mean() < 0.9
        assert np.array_equal(parts["x_img"][mask], parts["x_org"][mask])  # no relighting: the same face pixels
        assert np.all(parts["x_org"][~mask] == 0)
        rng = np.random.default_rng(seed)
        composition.face_geometry(face, rng, options)  # the geometry is drawn first, then the window
        window = cv2.cvtColor(composition.normalize(composition.background_window(back, rng)), cv2.COLOR_RGB2GRAY)
        assert np.array_equal(parts["x_img"][~mask], window[~mask])


def test_relighting_follows_the_background_brightness_in_lab():
    face = np.full((20, 20, 3), 100, np.uint8)
    mask = np.ones((20, 20), np.uint8)
    brighter = composition.relight(face, mask, np.full((20, 20, 3), 140, np.uint8))
    darker = composition.relight(face, mask, np.full((20, 20, 3), 40, np.uint8))
    lightness = lambda v: cv2.cvtColor(np.full((1, 1, 3), v / 255, np.float32), cv2.COLOR_RGB2Lab)[0, 0, 0]  # noqa
    assert darker[0, 0, 0] < 100 < brighter[0, 0, 0]
    w = lightness(140) / lightness(100)  # 1.37, inside [0.5, 1.5]
    assert 1.3 < w < 1.45
    # 0.25: OpenCV's float Lab -> RGB -> Lab round trip itself is off by up to 0.22 L (measured over L 10..90)
    assert abs(lightness(brighter[0, 0, 0]) - lightness(100) * w) < 0.25
    assert abs(lightness(darker[0, 0, 0]) - lightness(100) * 0.5) < 0.25  # 40 / 100 is clipped to w = 0.5
    gray = np.repeat(np.random.default_rng(0).integers(0, 256, (30, 30, 1)).astype(np.uint8), 3, 2)
    table = composition.relight(gray, np.ones((30, 30)), np.full((30, 30, 3), 90, np.uint8))
    lab = cv2.cvtColor(gray.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    w = lightness(90) / lab[..., 0].mean()
    lab[..., 0] = np.clip(lab[..., 0] * w, 10, 90)
    per_pixel = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0, 1) * 255
    # the gray table holds the per-pixel conversion's values (SIMD and scalar code round apart by ~1e-4)
    np.testing.assert_allclose(table, per_pixel, atol=1e-3)


def test_fill_holes_equals_scipy_with_upstreams_structure():
    rng = np.random.default_rng(0)
    for density in (0.3, 0.5, 0.7, 0.85):
        for _ in range(4):
            mask = cv2.dilate((rng.random((60, 70)) < density * 0.1).astype(np.uint8), np.ones((5, 5)))
            mask = mask.astype(bool) | (rng.random((60, 70)) < density * 0.4)
            expected = scipy.ndimage.binary_fill_holes(mask, structure=np.ones((7, 7)))
            np.testing.assert_array_equal(composition.fill_holes(mask), expected)


def test_background_window_matches_upstreams_crop_resize_and_slice():
    def upstream(back, rng, size=148):
        height, width = back.shape[:2]
        wr, hr = width / 1024, height / 640
        if wr > hr:
            resized = cv2.resize(back, (int(round(width / hr)), 640))
            start = int(round((resized.shape[1] - 1024) / 2.0))
            frame = resized[:, start:start + 1024]
        else:
            resized = cv2.resize(back, (1024, int(round(height / wr))))
            start = int(round((resized.shape[0] - 640) / 2.0))
            frame = resized[start:start + 640]
        dz = 50 * rng.random()
        dx, dy = int(rng.random() * ((1024 + dz) - size)), int(rng.random() * ((640 + dz) - size))
        return cv2.resize(frame[dy:dy + size, dx:dx + size], (size, size))

    for shape in ((120, 160), (300, 200)):
        back = _picture(2, shape)
        for seed in range(40):
            ours = composition.background_window(back, np.random.default_rng(seed)).astype(int)
            theirs = upstream(back, np.random.default_rng(seed)).astype(int)
            # the same sample positions; OpenCV quantises warpAffine's sub-pixel offsets to 1/32 px and a
            # stretched window is interpolated once here, twice upstream
            assert np.abs(ours - theirs).mean() < 1.0 and np.abs(ours - theirs).max() <= 12
    assert np.all(composition.background_window(None, np.random.default_rng(0)) == 255)
    assert np.all(composition.normalize(np.full((5, 5, 3), 255, np.uint8)) == 0)  # upstream's white turns black


def test_zero_geometry_keeps_the_prepared_face_and_normalize_is_upstreams_formula():
    face = _face(3)
    prepared, mask = composition.prepare_face(face)
    assert prepared.shape == (148, 148, 3) and not mask[:10].any() and mask.any()
    values = prepared[..., 0][mask].astype(float)
    face_values = np.pad(face, 10)[mask].astype(float)
    expected = np.clip((face_values - face_values.min()) / face_values.max() * 255, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(values, expected)
    still = composition.GeneratorOptions(angle=0, translation=0, warp=0, factor=0)
    for seed in range(4):
        warped, warped_mask, _ = composition.face_geometry(face, np.random.default_rng(seed), still)
        flipped = np.array_equal(warped, prepared[:, ::-1])
        assert flipped or np.array_equal(warped, prepared)
        assert np.array_equal(warped_mask.astype(bool), mask[:, ::-1] if flipped else mask)


def test_feratt_compose_op_renders_each_role_like_compose():
    face, back = _face(4), _picture(4)
    op = composition.FerattCompose(64, clahe=1.0, noise_blur=1.0)
    options = composition.GeneratorOptions()
    expected = composition.compose(face, back, np.random.default_rng(9), options, clahe=1.0, noise_blur=1.0)
    for role in ("image", "x_org", "image"):  # the second "image" hits no stale geometry cache
        got = np.asarray(op(composition.FaceComposition(face, back, role, options), np.random.default_rng(9)))
        assert np.array_equal(got, expected[role])
    raises_one_line(ConfigError, "start the preprocessing string with 'feratt_compose'", transforms.parse("to_float"),
                    composition.FaceComposition(face, back, "image", options), np.random.default_rng(0))
    raises_one_line(ConfigError, "start the preprocessing string with 'feratt_compose'",
                    transforms.parse("cv_resize(64)|to_float"),
                    composition.FaceComposition(face, back, "image", options), np.random.default_rng(0))
    raises_one_line(ConfigError, "clahe must be a probability", transforms.parse, "feratt_compose(clahe=2)|to_float")
    raises_one_line(ConfigError, "angle must be a number >= 0", composition.GeneratorOptions, angle=-1)


# --- Synthetic datasets in the pipelines ---------------------------------------------------------------

@pytest.fixture(scope="module")
def written(tmp_path_factory):
    base = tmp_path_factory.mktemp("feratt")
    return {"ck": make_synthetic("ck", str(base / "ck"), num_train=96, num_test=40, seed=1, image_size=64),
            "bu3dfe": make_synthetic("bu3dfe", str(base / "bu"), num_train=21, num_test=14, seed=2, image_size=48),
            "backgrounds": make_synthetic("backgrounds", str(base / "bg"), num_train=6, num_test=1, seed=0,
                                          image_size=64)}


def test_written_mat_files_are_matlab_v73_with_balanced_classes_and_the_fold(written):
    path = os.path.join(written["ck"], "ck", "ck.mat")
    with open(path, "rb") as f:
        assert f.read(19) == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        assert f["data"].shape == (136, 64 * 64) and f["points"].shape == (136, 2, 68)
        assert f["iactor"].shape == (1, 136) and f["imsize"].shape == (2, 1) and f["data"].attrs["MATLAB_class"] == b"uint8"
        assert f["name"].attrs["MATLAB_class"] == b"cell" and f["name"].shape == (1, 136)
        first = f[f["name"][0, 0]]
        assert first.attrs["MATLAB_class"] == b"char" and "".join(map(chr, first[:, 0])).startswith("S")
    train, test = create_source("ck", written["ck"], "train"), create_source("ck", written["ck"], "test")
    assert len(train) == 96 and len(test) == 40 and len(set(test.subjects)) == 10
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=8), [12] * 8)
    bu = create_source("bu3dfe", written["bu3dfe"], "train")
    assert bu.num_classes == 7 and np.array_equal(np.bincount(bu.labels), [3] * 7)


def test_written_faces_are_learnable_across_subjects(written):
    """Nearest class mean on 32 px dark faces, trained on 96 faces, tested on 40 faces of 10 unseen subjects."""
    def features(source):
        x = np.stack([cv2.resize(source.face(i), (32, 32), interpolation=cv2.INTER_AREA).ravel() / 255.0
                      for i in range(len(source))])
        return x - x.mean(axis=1, keepdims=True)

    train, test = create_source("ck", written["ck"], "train"), create_source("ck", written["ck"], "test")
    means = np.stack([features(train)[train.labels == c].mean(axis=0) for c in range(8)])
    predicted = np.argmin(((features(test)[:, None] - means[None]) ** 2).sum(axis=-1), axis=1)
    assert (predicted == test.labels).mean() >= 0.3  # chance is 0.125; measured 0.45


def test_synthetic_source_sampling_and_options(written):
    root, backgrounds = written["ck"], written["backgrounds"]
    source = create_source("ck_synthetic", root, "train", backgrounds=backgrounds, count=50)
    faces = source.faces
    assert source.image_entries == ("image", "x_org") and source.shared_draws and len(source) == 50
    np.testing.assert_array_equal(source.labels, np.arange(50) % 8)
    assert np.all(faces.labels[source.face_index] == source.labels)
    assert len(set(source.face_index.tolist())) > 30 and source.background_index.max() < 6
    example = source.example(3)
    assert set(example) == {"image", "x_org", "label"} and example["image"]["path"].startswith(backgrounds)
    sequential = create_source("ck_synthetic", root, "test", backgrounds=None, sampling="sequential")
    assert len(sequential) == 40 and np.array_equal(sequential.face_index, np.arange(40))
    assert sequential.decode(sequential.example(0)["image"]).background is None
    assert repr(source) == repr(create_source("ck_synthetic", root, "train", backgrounds=backgrounds, count=50))
    moved = create_source("ck_synthetic", root, "train", backgrounds=backgrounds, count=50, sample_seed=1)
    assert not np.array_equal(moved.face_index, source.face_index)
    bu = create_source("bu3dfe_synthetic", written["bu3dfe"], "train", backgrounds=backgrounds, count=14)
    assert bu.num_classes == 7 and np.array_equal(bu.labels, np.arange(14) % 7)
    raises_one_line(ConfigError, "sampling must be one of", create_source, "ck_synthetic", root, "train",
                    backgrounds=backgrounds, sampling="random")
    raises_one_line(ConfigError, "count must be an integer >= 1", create_source, "ck_synthetic", root, "train",
                    backgrounds=backgrounds, count=0)
    raises_one_line(ConfigError, "CK\\+ synthetic: factor must be < 1", create_source, "ck_synthetic", root, "train",
                    backgrounds=backgrounds, factor=1.5)
    raises_one_line(ConfigError, "bad options .*backgrounds", create_source, "ck_synthetic", root, "train")


def test_background_folder_errors(written, tmp_path):
    root = written["ck"]
    raises_one_line(DatasetError, "background folder .*nowhere not found; expected a folder of background pictures",
                    create_source, "ck_synthetic", root, "train", backgrounds=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    raises_one_line(DatasetError, "background folder .*empty holds no pictures", create_source, "ck_synthetic",
                    root, "train", backgrounds=str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    source = create_source("ck_synthetic", root, "train", backgrounds=str(tmp_path / "bad"), count=8)
    with pytest.raises(UnreadableImage, match="broken.jpg"):
        source.decode(source.example(0)["image"])
    assert source.decode(source.example(0)["x_org"]).role == "x_org"  # the clean face needs no picture


def test_synthetic_batches_are_deterministic_resumable_and_substitute_unreadable_pictures(written, tmp_path):
    source = create_source("ck_synthetic", written["ck"], "train", backgrounds=written["backgrounds"], count=64)
    batches = [b for _, b in zip(range(2), pipeline.train_iterator(source, COMPOSE, global_batch=4, seed=3))]
    first = batches[0]
    assert set(first) == {"image", "x_org", "label"}
    assert first["image"].shape == first["x_org"].shape == (4, 64, 64, 3) and first["image"].dtype == np.float32
    assert 0.0 <= first["image"].min() and first["image"].max() <= 1.0 and first["x_org"].max() > 0.5
    assert np.all(first["x_org"][:, 0, 0] == 0)  # the clean face on black
    again = next(pipeline.train_iterator(source, COMPOSE, global_batch=4, seed=3))
    resumed = next(pipeline.train_iterator(source, COMPOSE, global_batch=4, seed=3, start_step=1))
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])
        np.testing.assert_array_equal(resumed[key], batches[1][key])
    other = next(pipeline.train_iterator(source, COMPOSE, global_batch=4, seed=4))
    assert not np.array_equal(other["image"], first["image"])
    evaluation = [next(pipeline.eval_iterator(source, COMPOSE, global_batch=8)) for _ in range(2)]
    np.testing.assert_array_equal(evaluation[0]["image"], evaluation[1]["image"])
    # one unreadable picture: its examples are replaced by the next readable ones, with one warning
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in sorted(os.listdir(written["backgrounds"]))[:3]:
        (folder / name).write_bytes(open(os.path.join(written["backgrounds"], name), "rb").read())
    (folder / "000000.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    broken = create_source("ck_synthetic", written["ck"], "train", backgrounds=str(folder), count=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        iterator = pipeline.train_iterator(broken, COMPOSE, global_batch=8, seed=0)
        batch = next(iterator)
    assert batch["image"].shape == (8, 64, 64, 3) and iterator.num_substituted >= 1
    assert iterator.unreadable_files == [str(folder / "000000.jpg")]
    assert any(issubclass(w.category, pipeline.UnreadableImageWarning) for w in caught)
