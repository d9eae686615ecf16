"""The one torch-key <-> Flax-path rule: every key of every reference model, both ways, strictly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import torch_helpers
from fer_jax import merge, models
from fer_jax.errors import CheckpointError
from porting import archs, mapping, reference

CASES = {
    "dan": (lambda: reference.DAN(7, 4), {"num_class": 7, "num_head": 4}),
    "dan_c8_h2": (lambda: reference.DAN(8, 2), {"num_class": 8, "num_head": 2}),
    "resnet18": (lambda: reference.resnet18(1000), {"num_classes": 1000}),
    "resnet18_backbone": (lambda: reference.resnet18(None), {"num_classes": None}),
    "resnet34": (lambda: reference.resnet34(10), {"num_classes": 10}),
}


def flax_setup(arch: str, hparams: dict):
    """Module kinds and abstract variables through the network's declared init."""
    spec = models.spec(arch)
    module = models.create(arch, **hparams)
    return mapping.module_kinds(module, *spec.batch_inputs(spec.example_inputs(1, 64)), **spec.init_kwargs())


@pytest.mark.parametrize("case", list(CASES))
def test_every_key_maps_both_ways(case):
    build, hparams = CASES[case]
    arch = case.split("_")[0]
    torch_model = torch_helpers.randomize(build(), seed=1, image_size=32) if arch == "dan" else build()
    sd = torch_helpers.state_dict_numpy(torch_model)
    kinds, abstract = flax_setup(arch, hparams)

    variables, report = mapping.torch_to_flax(sd, abstract, kinds)

    n_bn = sum(k.endswith("num_batches_tracked") for k in sd)
    assert report.counts()["num_batches_tracked"] == n_bn > 0
    assert len(report.loaded) + n_bn == len(sd)
    assert not (report.unused or report.missing or report.dropped or report.left_at_init)
    flat = traverse_util.flatten_dict(variables)
    assert set(flat) == set(traverse_util.flatten_dict(abstract))  # every Flax variable filled once
    back = mapping.flax_to_torch(variables, kinds, num_batches_tracked=report.num_batches_tracked)
    assert set(back) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
        assert back[k].dtype == v.dtype, k


def test_layout_transforms_by_module_type():
    sd = torch_helpers.state_dict_numpy(reference.DAN(7, 4))
    kinds, abstract = flax_setup("dan", {"num_class": 7, "num_head": 4})
    v, _ = mapping.torch_to_flax(sd, abstract, kinds)
    w = sd["cat_head0.sa.conv_1x3.0.weight"]  # [512, 256, 1, 3] OIHW
    np.testing.assert_array_equal(v["params"]["cat_head0"]["sa"]["conv_1x3"]["0"]["kernel"],
                                  w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v["params"]["fc"]["kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(v["batch_stats"]["bn"]["var"], sd["bn.running_var"])
    assert kinds[("cat_head0", "ca", "attention", "1")] == "batchnorm"
    assert kinds[("features", "4", "0", "conv1")] == "conv"


def test_shape_mismatch_names_both_sides():
    sd = torch_helpers.state_dict_numpy(reference.DAN(7, 4))
    kinds, abstract = flax_setup("dan", {"num_class": 8, "num_head": 4})
    with pytest.raises(CheckpointError, match=r"torch fc.weight \[7, 512\] -> flax params/fc/kernel needs \[8, 512\]"):
        mapping.torch_to_flax(sd, abstract, kinds)


def test_unused_and_missing_keys_are_errors():
    sd = torch_helpers.state_dict_numpy(reference.DAN(7, 4))
    kinds, abstract = flax_setup("dan", {"num_class": 7, "num_head": 4})
    extra = {**sd, "sig.weight": np.zeros(3, np.float32)}
    with pytest.raises(CheckpointError, match="1 source entries have no place in the model"):
        mapping.torch_to_flax(extra, abstract, kinds)
    short = {k: v for k, v in sd.items() if not k.startswith("cat_head3.")}
    with pytest.raises(CheckpointError, match="model variables have no source"):
        mapping.torch_to_flax(short, abstract, kinds)


def test_msceleb_backbone_into_dan_drops_classifier_explicitly():
    sd = torch_helpers.state_dict_numpy(reference.resnet18(1000))
    module = models.create("dan")
    kinds, _ = flax_setup("dan", {"num_class": 7, "num_head": 4})
    init = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
    rule = models.REGISTRY["dan"].init_from["resnet18"]
    # Without the explicit drop, the 1000-way classifier lands on DAN's fc and is refused by shape.
    with pytest.raises(CheckpointError, match=r"torch fc.weight \[1000, 512\] -> flax params/fc/kernel"):
        mapping.torch_to_flax(sd, init, kinds, renames=rule.renames, allow_missing=rule.init)
    v, report = mapping.torch_to_flax(sd, init, kinds, renames=rule.renames, drop=rule.drop,
                                      allow_missing=rule.init)
    assert report.dropped == ["fc.weight", "fc.bias"]
    assert "2 source entries dropped on request (fc.weight, fc.bias)" in report.summary()
    np.testing.assert_array_equal(v["params"]["features"]["7"]["1"]["conv2"]["kernel"],
                                  sd["layer4.1.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v["params"]["fc"]["kernel"], init["params"]["fc"]["kernel"])
    assert all(p.split("/")[1] in ("cat_head0", "cat_head1", "cat_head2", "cat_head3", "fc", "bn")
               for p in report.left_at_init)


def test_merge_variables_flax_to_flax_matches_torch_route():
    """Training's init_from (Flax ResNet18 -> DAN) gives the same variables as the direct torch route."""
    sd = torch_helpers.state_dict_numpy(reference.resnet18(1000))
    r_kinds, r_abstract = flax_setup("resnet18", {"num_classes": 1000})
    resnet_vars, _ = mapping.torch_to_flax(sd, r_abstract, r_kinds)
    module = models.create("dan")
    init = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
    rule = models.REGISTRY["dan"].init_from["resnet18"]
    merged, report = merge.merge_variables(resnet_vars, init, renames=rule.renames, drop=rule.drop,
                                           allow_missing=rule.init)
    assert report.counts() == {"loaded_batch_stats": 40, "loaded_params": 60, "num_batches_tracked": 0,
                               "dropped": 2, "unused": 0, "missing": 0, "left_at_init": 134}
    kinds, _ = flax_setup("dan", {"num_class": 7, "num_head": 4})
    direct, _ = mapping.torch_to_flax(sd, init, kinds, renames=rule.renames, drop=rule.drop,
                                      allow_missing=rule.init)
    jax.tree.map(np.testing.assert_array_equal, merged, direct)


def listing_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an upstream key listing (tests/fixtures/upstream_keys)."""
    from test_reference_keys import read_listing

    return {k: tuple(shape) for k, shape, _ in read_listing(name)}


@pytest.mark.parametrize("arch, build, expected", [
    ("dan", lambda: reference.DAN(7, 4), {"num_head": 4, "num_class": 7}),
    ("dan", lambda: reference.DAN(8, 2), {"num_head": 2, "num_class": 8}),
    ("dan", lambda: reference.DAN(7, 1), {"num_head": 1, "num_class": 7}),
    ("resnet18", lambda: reference.resnet18(1000), {"num_classes": 1000}),
    ("resnet18", lambda: reference.resnet18(None), {"num_classes": None}),
    ("resnet34", lambda: reference.resnet34(7), {"num_classes": 7}),
])
def test_architecture_detection(arch, build, expected):
    shapes = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    found = archs.detect(shapes)
    assert (found.spec.name, found.hparams) == (arch, expected)


def test_detection_is_exact():
    shapes = listing_shapes("keys_resnet18_torchvision.txt")
    # torch's BatchNorm loader accepts files saved without num_batches_tracked; so do we.
    without = {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}
    assert archs.detect(without).spec.name == "resnet18"
    # One key more or less, or one shape off, and it is no longer a ResNet18.
    for broken in ({**shapes, "extra.weight": (3,)},
                   {k: v for k, v in shapes.items() if k != "layer3.1.bn2.weight"},
                   {**shapes, "layer2.0.conv2.weight": (128, 128, 1, 1)}):
        with pytest.raises(CheckpointError, match="unrecognised architecture .* closest: resnet18"):
            archs.detect(broken)


def test_look_alikes_are_refused_with_the_difference():
    """A PreActResNet18 (FERAtt's baseline) is not a ResNet18: the error says what differs."""
    preact = listing_shapes("keys_preactresnet18.txt")
    with pytest.raises(CheckpointError, match=r"not a resnet18 .*missing \(bn1\.weight.*unexpected.*shapes differ "
                                              r"\(conv1\.weight: file \[64, 3, 3, 3\] vs model \[64, 3, 7, 7\]"):
        archs.detect(preact, arch="resnet18")
    found = archs.detect(preact)  # and it is recognised as what it is
    assert (found.spec.name, found.hparams) == ("preactresnet18", {"num_classes": 8})


def test_unknown_architecture_and_arch_override():
    with pytest.raises(CheckpointError, match="unrecognised architecture .* closest: "):
        archs.detect({"encoder.weight": (3, 3), "decoder.weight": (3, 3)})
    with pytest.raises(CheckpointError, match="unknown --arch 'vgg'"):
        archs.detect({"conv1.weight": (64, 3, 7, 7)}, arch="vgg")
    shapes = {k: tuple(v.shape) for k, v in reference.resnet18(5).state_dict().items()}
    with pytest.raises(CheckpointError, match="not a resnet34 .* keys missing \\(layer1.2"):
        archs.detect(shapes, arch="resnet34")
    assert archs.detect(shapes, arch="resnet18").hparams == {"num_classes": 5}




@pytest.mark.parametrize("arch, size", [("resnet18", 32), ("emotion_fan", None)])
def test_declared_init_draws_exactly_what_module_init_draws(arch, size):
    """ModelSpec.init initialises lazily (no forward pass is run); the values are module.init's, bit for bit,
    with the declared init method and RNG streams (Emotion-FAN: `initialize`, dropout)."""
    spec, module = models.spec(arch), models.create(arch)
    example = {k: np.zeros(v.shape, v.dtype) for k, v in spec.example_inputs(1, size).items()}
    got = spec.init(module, jax.random.key(4), example)
    want = module.init(spec.init_rngs(jax.random.key(4)), *spec.batch_inputs(example), **spec.init_kwargs())
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
