"""Transforms against hand-computed expectations, and the preprocessing-string parser."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from fer_jax.data import transforms
from fer_jax.errors import ConfigError


def _image(height=6, width=8, seed=0):
    pixels = np.random.default_rng(seed).integers(1, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels), pixels


def _op(spec):
    return transforms._parse_chain(spec).ops[0]


def test_resize_matches_pil_bilinear_and_shorter_side_rule():
    img, _ = _image(30, 50)
    out = _op("resize(12,20)")(img, None)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img.resize((20, 12), Image.BILINEAR)))
    assert _op("resize(10)")(img, None).size == (16, 10)  # width int(10 * 50 / 30) = 16
    tall, _ = _image(50, 30)
    assert _op("resize(10)")(tall, None).size == (10, 16)
    assert _op("resize(30,50)")(img, None) is img  # torchvision returns the input at the same size


def test_hflip_probability_and_both_types():
    img, pixels = _image()
    flipped = _op("hflip(1.0)")(img, np.random.default_rng(0))
    np.testing.assert_array_equal(np.asarray(flipped), pixels[:, ::-1])
    assert _op("hflip(0.0)")(img, np.random.default_rng(0)) is img
    array = pixels.astype(np.float32)
    np.testing.assert_array_equal(_op("hflip(1)")(array, np.random.default_rng(0)), array[:, ::-1])
    flips = sum(_op("hflip(0.5)")(array, np.random.default_rng(s))[0, 0, 0] != array[0, 0, 0] for s in range(400))
    assert 150 < flips < 250  # binomial(400, 0.5): sd 10


def test_rotate_by_90_is_exact_on_a_square_and_counter_clockwise():
    img, pixels = _image(7, 7)
    out = _op("rotate((90,90))")(img, np.random.default_rng(0))
    np.testing.assert_array_equal(np.asarray(out), np.rot90(pixels, k=1))


def test_rotate_nearest_fill_zero_keeps_size():
    img, pixels = _image(9, 9)
    out = np.asarray(_op("rotate((45,45))")(img, np.random.default_rng(0)))
    assert out.shape == pixels.shape
    assert (out[0, 0] == 0).all() and (out[-1, -1] == 0).all()  # corners rotate out: fill 0
    assert np.isin(out[4, 4], pixels.reshape(-1, 3)).all()  # nearest: values are copied, not blended
    np.testing.assert_array_equal(out[4, 4], pixels[4, 4])  # the centre stays


def test_rotate_angle_range():
    op = _op("rotate(20)")
    assert (op.low, op.high) == (-20.0, 20.0)


def test_crop_padding_is_zero_and_window_follows_the_rng():
    img, pixels = _image(6, 8)
    padded = np.zeros((6 + 4, 8 + 4, 3), np.uint8)
    padded[2:8, 2:10] = pixels
    # a window the size of the padded image: the only choice is the whole padded image
    np.testing.assert_array_equal(np.asarray(_op("crop((10,12),padding=2)")(img, np.random.default_rng(0))),
                                  padded)
    for seed in range(5):
        out = np.asarray(_op("crop(4,padding=2)")(img, np.random.default_rng(seed)))
        rng = np.random.default_rng(seed)
        i, j = rng.integers(0, 10 - 4 + 1), rng.integers(0, 12 - 4 + 1)
        np.testing.assert_array_equal(out, padded[i:i + 4, j:j + 4])
    asymmetric = np.asarray(_op("crop((7,9),padding=(1,0,0,1))")(img, np.random.default_rng(0)))
    np.testing.assert_array_equal(asymmetric[:6, 1:], pixels)  # left 1, bottom 1
    assert (asymmetric[:, 0] == 0).all() and (asymmetric[6] == 0).all()


def test_affine_translation_shifts_with_zero_fill():
    img, pixels = _image(8, 8)
    out = np.asarray(_op("affine((0,0),translate=(0.25,0.25))")(img, np.random.default_rng(3)))
    rng = np.random.default_rng(3)
    rng.uniform(0, 0)  # the angle draw
    tx, ty = (int(round(float(rng.uniform(-2.0, 2.0)))) for _ in range(2))
    expected = np.zeros_like(pixels)
    src = pixels[max(0, -ty):8 - max(0, ty), max(0, -tx):8 - max(0, tx)]
    expected[max(0, ty):max(0, ty) + src.shape[0], max(0, tx):max(0, tx) + src.shape[1]] = src
    assert (tx, ty) != (0, 0)
    np.testing.assert_array_equal(out, expected)


def test_affine_rotation_by_90_turns_clockwise_like_torchvision():
    img, pixels = _image(6, 6)
    out = np.asarray(_op("affine((90,90))")(img, np.random.default_rng(0)))
    np.testing.assert_array_equal(out, np.rot90(pixels, k=-1))


def test_affine_scale_shrinks_towards_the_centre():
    img, pixels = _image(8, 8)
    out = np.asarray(_op("affine((0,0),scale=(0.5,0.5))")(img, np.random.default_rng(0)))
    assert (out[:2] == 0).all() and (out[:, :2] == 0).all() and (out[6:] == 0).all()
    assert (out[2:6, 2:6] != 0).any()


def test_to_float_and_normalize():
    img, pixels = _image()
    x = _op("to_float")(img, None)
    assert x.dtype == np.float32 and x.shape == (6, 8, 3)
    np.testing.assert_array_equal(x, pixels.astype(np.float32) / np.float32(255))
    y = _op("normalize('imagenet')")(x, None)
    mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
    np.testing.assert_array_equal(y, (x - mean) / std)
    np.testing.assert_array_equal(_op("normalize((0.5,0.5,0.5),(0.5,0.5,0.5))")(x, None),
                                  _op("normalize('half')")(x, None))


def test_erasing_zeroes_one_rectangle_of_the_normalised_image():
    chain = transforms.parse("to_float|normalize('imagenet')|erase(1.0,(0.1,0.2),(0.5,2.0))")
    img = Image.fromarray(np.full((20, 30, 3), 200, np.uint8))  # normalised values are all far from 0
    for seed in range(20):
        out = chain(img, np.random.default_rng(seed))
        erased = (out == 0).all(-1)
        rows, cols = np.nonzero(erased)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert erased.sum() == h * w  # one filled rectangle, value 0 in normalised space
        # area from scale (0.1, 0.2) of 600 px and aspect from ratio (0.5, 2); the margins allow for
        # rounding h and w (each >= 5 here) to integers
        assert 0.1 * 600 * 0.75 <= h * w <= 0.2 * 600 * 1.3
        assert 0.5 * 0.75 <= h / w <= 2.0 * 1.35


def test_erasing_follows_torchvision_algorithm_draw_by_draw():
    x = np.random.default_rng(0).normal(size=(16, 16, 3)).astype(np.float32)
    op = _op("erase(0.5,(0.02,0.33),(0.3,3.3),-1)")
    for seed in range(30):
        out = op(x, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        expected = x
        if rng.random() < 0.5:
            for _ in range(10):
                area = 256 * rng.uniform(0.02, 0.33)
                aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
                h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if h < 16 and w < 16:
                    i, j = rng.integers(0, 16 - h + 1), rng.integers(0, 16 - w + 1)
                    expected = x.copy()
                    expected[i:i + h, j:j + w] = -1
                    break
        np.testing.assert_array_equal(out, expected)


def test_erasing_gives_up_after_ten_attempts():
    x = np.ones((2, 2, 3), np.float32)  # area >= 3.6 px cannot fit in a window with h < 2 and w < 2
    out = _op("erase(1.0,(0.9,1.0))")(x, np.random.default_rng(0))
    np.testing.assert_array_equal(out, x)


def test_random_apply_uses_one_coin_for_the_group():
    img, pixels = _image()
    chain = transforms.parse("random_apply(0.5,'hflip(1.0)','hflip(1.0)')|to_float")
    # two flips cancel; one coin per op would leave ~half of the images flipped
    for seed in range(50):
        np.testing.assert_array_equal(chain(img, np.random.default_rng(seed)), pixels / np.float32(255))
    group = _op("random_apply(0.5,'hflip(1.0)')")
    applied = sum(np.asarray(group(img, np.random.default_rng(s)))[0, 0, 0] != pixels[0, 0, 0] for s in range(400))
    assert 150 < applied < 250


def test_dan_recipe_strings():
    img, _ = _image(100, 100)
    for spec in (transforms.DAN_RAFDB_TRAIN, transforms.DAN_AFFECTNET_TRAIN, transforms.DAN_EVAL):
        chain = transforms.parse(spec)
        out = chain(img, np.random.default_rng(0))
        assert out.shape == (224, 224, 3) and out.dtype == np.float32
        np.testing.assert_array_equal(out, chain(img, np.random.default_rng(0)))
        assert repr(chain) == f"Chain({spec!r})"
    rafdb = transforms.parse(transforms.DAN_RAFDB_TRAIN).ops
    assert [type(op).__name__ for op in rafdb] == ["Resize", "HFlip", "RandomApply", "ToFloat", "Normalize",
                                                    "RandomErasing"]
    assert [type(op).__name__ for op in rafdb[2].chain.ops] == ["Rotate", "RandomCrop"]
    assert rafdb[2].p == 0.2 and rafdb[2].chain.ops[1].padding == (32,) * 4
    assert rafdb[5].scale == (0.02, 0.25) and rafdb[5].p == 0.5 and rafdb[5].value == 0
    affine = transforms.parse(transforms.DAN_AFFECTNET_TRAIN).ops[2]
    assert affine.p == 0.7 and affine.chain.ops[0].translate == (0.2, 0.2)
    assert affine.chain.ops[0].scale == (0.8, 1.0) and affine.chain.ops[0].degrees == (-20.0, 20.0)


@pytest.mark.parametrize("spec, match", [
    ("resize(8,8)|blur(3)|to_float", "unknown preprocess op 'blur'"),
    ("resize(8,8)|to_float|normalize(mean)", "must be Python literals"),
    ("resize(8,8)|to_float|normalize('imagenet', scale=2)", "unexpected keyword"),
    ("resize(8,'8')|to_float", "positive ints"),
    ("resize(8,8)|normalize('imagenet')|to_float", "needs array input"),
    ("to_float|resize(8,8)", "needs image input"),
    ("resize(8,8)", "must take an image and contain to_float"),
    ("resize(8,8)|to_float|", "is not 'name' or 'name\\(args\\)'"),
    ("resize(8,8)|to_float|x.y", "is not 'name' or 'name\\(args\\)'"),
    ("", "non-empty string"),
    ("random_apply(0.5)|to_float", "at least one op"),
    ("random_apply(0.5,'to_float')", "must not change the image type"),
    ("rotate(-5)|to_float", "must be >= 0"),
    ("crop(8,padding=(1,2,3))|to_float", "padding must be"),
    ("to_float|erase(0.5,(0.1,0.2),(0,1))", "math domain error"),
    ("to_float|normalize('cifar')", "named constants"),
])
def test_bad_preprocessing_strings_are_one_line_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        transforms.parse(spec)
    assert "\n" not in str(info.value)
