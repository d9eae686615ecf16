"""Face finding on a real photograph (scikit-image's astronaut: Eileen Collins, one frontal face) and crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from fer_jax import faces

ASTRONAUT_FACE = (177, 67, 93, 93)  # measured; the face spans roughly x 175-270, y 65-160 in the 512 x 512 photo


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()  # 512 x 512 x 3 uint8 RGB


def near(box, expected, tol):
    return all(abs(a - b) <= tol for a, b in zip(box, expected))


def test_the_one_face_of_a_real_photograph(astronaut):
    found = faces.detect(astronaut)
    assert len(found) == 1 and near(found[0].box, ASTRONAUT_FACE, 4), found
    assert found[0].score > 3


@pytest.mark.parametrize("convert", [
    lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY),  # grayscale
    lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[:, :, None],  # H x W x 1
    lambda im: np.concatenate([im, np.full(im.shape[:2] + (1,), 128, np.uint8)], axis=2),  # RGBA
    lambda im: im.astype(np.uint16) * 257,  # 16-bit
], ids=["gray", "gray_hw1", "rgba", "uint16"])
def test_other_pixel_formats_find_the_same_face(astronaut, convert):
    found = faces.detect(convert(astronaut))
    assert len(found) == 1 and near(found[0].box, ASTRONAUT_FACE, 4), found


def test_a_huge_photograph_is_searched_downscaled_and_boxes_map_back(astronaut):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # searched at 1600 px
    largest = faces.detect(big)[0]
    assert near(largest.box, [4 * v for v in ASTRONAUT_FACE], 4 * 6), largest


def test_no_face_and_bad_arrays():
    assert faces.detect(np.full((120, 160, 3), 90, np.uint8)) == []
    with pytest.raises(ValueError, match="uint8 or uint16"):
        faces.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="got shape"):
        faces.detect(np.zeros((64, 64, 2), np.uint8))


def test_crop_is_square_around_the_face_and_repeats_the_border(astronaut):
    face = faces.detect(astronaut)[0]
    out = faces.crop(astronaut, face, margin=0.25)
    side = round(face.width * 1.5)
    assert out.shape == (side, side, 3) and out.dtype == np.uint8
    x0, y0 = round(face.x + face.width / 2 - side / 2), round(face.y + face.height / 2 - side / 2)
    np.testing.assert_array_equal(out, astronaut[y0:y0 + side, x0:x0 + side])
    assert faces.crop(astronaut, face, size=112).shape == (112, 112, 3)
    corner = faces.crop(astronaut, faces.Face(0, 0, 40, 40, 1.0), margin=0.5)  # reaches 20 px beyond the image
    assert corner.shape == (80, 80, 3)
    np.testing.assert_array_equal(corner[:20, :20], np.broadcast_to(astronaut[0, 0], (20, 20, 3)))
    np.testing.assert_array_equal(corner[20:, 20:], astronaut[:60, :60])


def test_dlib_detector_with_landmarks(astronaut):
    """The dlib extra: the HOG detector finds the face (it also scores the mission patch above its threshold 0,
    as upstream's alignment runs it) with five landmarks inside the box, the nose below the eyes."""
    found = faces.detect(astronaut, detector="dlib")
    best = max(found, key=lambda f: f.score)
    assert near(best.box, ASTRONAUT_FACE, 12) and best.score > 1, found
    (e1, e2, e3, e4, nose) = best.landmarks
    for x, y in best.landmarks:
        assert best.x <= x < best.x + best.width and best.y <= y < best.y + best.height
    assert nose[1] > max(e[1] for e in (e1, e2, e3, e4)) + 15
    assert min(e1[0], e2[0]) > nose[0] > max(e3[0], e4[0])  # one eye's corners either side of the nose


def test_aligned_chips_undo_rotation(astronaut):
    """`align` (dlib's get_face_chip from the landmarks) gives the same upright chip for the photograph and for
    the photograph turned by 12 degrees; a box crop of the turned photograph differs far more."""
    h, w = astronaut.shape[:2]
    turned = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0), (w, h),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    chips, crops = [], []
    for image in (astronaut, turned):
        face = max(faces.detect(image, detector="dlib"), key=lambda f: f.score)
        chips.append(faces.align(image, face, size=112, padding=0.25).astype(float))
        crops.append(faces.crop(image, face, margin=0.25, size=112).astype(float))
    assert chips[0].shape == (112, 112, 3)
    aligned, unaligned = np.abs(chips[0] - chips[1]).mean(), np.abs(crops[0] - crops[1]).mean()
    assert aligned < 12 and aligned < unaligned / 2, (aligned, unaligned)
    with pytest.raises(ValueError, match="needs its landmarks"):
        faces.align(astronaut, faces.detect(astronaut)[0], size=112)


def test_dlib_without_its_extra_is_one_clear_error(monkeypatch):
    import importlib.util

    from fer_jax.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models"
                        else real(name, *a))
    faces._dlib.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"pip install 'fer-jax\[dlib\]'"):
            faces.check_detector("dlib")
    finally:
        faces._dlib.cache_clear()
    with pytest.raises(ConfigError, match="unknown face detector 'mtcnn'"):
        faces.check_detector("mtcnn")
