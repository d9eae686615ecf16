"""fer-jax's per-kind XLA compile options (fer_jax/xla.py): where they apply and what they leave alone."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import xla


def test_cpu_options_per_kind_and_the_users_flags_win(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("FER_JAX_XLA_OPTIONS", raising=False)
    assert jax.default_backend() == "cpu"
    assert xla.options("train") == {xla.FLAG: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
                                    xla.REGION_ANALYSIS: True}
    assert xla.options("eval") == {xla.FLAG: ""}
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 --{xla.FLAG}=")
    assert xla.options("train") == {xla.REGION_ANALYSIS: True}  # the user's own setting of an option wins
    monkeypatch.setenv("XLA_FLAGS", f"--{xla.REGION_ANALYSIS}=false --{xla.FLAG}")
    assert xla.options("train") == {} and xla.options("eval") == {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setenv("FER_JAX_XLA_OPTIONS", "0")
    assert xla.options("eval") == {}
    with pytest.raises(ValueError, match="kind must be"):
        xla.options("predict")


def _conv_net(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(y) @ jnp.ones((w.shape[-1], 3), y.dtype), axis=(1, 2))


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_compiled_steps_compute_the_same(kind):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 12, 12, 8)), rng.standard_normal((3, 3, 8, 16))
    grad = jax.grad(lambda w, x: jnp.sum(_conv_net(x, w) ** 2))
    with jax.enable_x64(True):  # float64: only the summation order may change (measured ~1e-16 relative)
        for fn, args in ((_conv_net, (x, w)), (grad, (w, x))):
            ours, ref = np.asarray(xla.jit(fn, kind)(*args)), np.asarray(jax.jit(fn)(*args))
            assert np.max(np.abs(ours - ref)) <= 1e-13 * np.max(np.abs(ref))
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    ours, ref = xla.jit(grad, kind)(w32, x32), jax.jit(grad)(w32, x32)
    # float32: another summation order; relative to the gradient's scale, within a few float32 ulps x fan-in.
    assert np.max(np.abs(ours - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_train_options_leave_donated_parameters_uncopied():
    """A donated train step writes the new parameters over the old ones. Without region analysis in copy
    insertion XLA copies parameters first (DAN: 135 copies, 79 MB a step); the train options leave them out,
    and the step computes bitwise the same."""
    import optax

    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))

    def loss(params, x):
        for w in (params["a"], params["b"]):
            x = jax.nn.relu(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return jnp.mean(x ** 2)

    def step(state, x):
        params, opt_state = state
        updates, opt_state = tx.update(jax.grad(loss)(params, x), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 4)), jnp.float32)
    params = {k: jnp.asarray(rng.standard_normal((3, 3, 4, 4)), jnp.float32) for k in "ab"}
    without = {k: v for k, v in xla.options("train").items() if k != xla.REGION_ANALYSIS}  # the rest is equal
    results, copies = [], []
    for compile_ in (functools.partial(jax.jit, donate_argnums=0, compiler_options=without),
                     functools.partial(xla.jit, kind="train", donate_argnums=0)):
        state = jax.tree.map(jnp.copy, (params, tx.init(params)))
        compiled = compile_(step).lower(state, x).compile()
        entry = compiled.as_text().split("ENTRY", 1)[1]
        copies.append(entry.count(" copy("))
        for _ in range(3):
            state = compiled(state, x)
        results.append(jax.tree.leaves(state))
    assert copies[0] >= 1 and copies[1] == 0, copies  # without region analysis XLA copies here, with it not
    for ours, ref in zip(results[1], results[0]):
        np.testing.assert_array_equal(ours, ref)


def _weighted_loss(conv, x, w, **kwargs):
    y = conv(x, w, **kwargs)
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))


def _assert_equals_xla_convolution(x, w, jit=False, **kwargs):
    """In float64 (the caller enables it): the output of `convolution.conv_general_dilated` and the gradients of
    a weighted sum of it in `x` and `w` equal lax.conv_general_dilated's up to summation order, eagerly and,
    with `jit`, compiled too. Returns the jaxpr of fer-jax's path, for the caller to check which one it took."""
    from fer_jax.models import convolution

    loss = functools.partial(_weighted_loss, **kwargs)
    for wrap in (lambda f: f, functools.partial(jax.jit, static_argnums=0))[:2 if jit else 1]:
        for argnum in (None, 1, 2):
            ours, ref = (wrap(jax.grad(loss, argnum) if argnum else loss)(conv, x, w)
                         for conv in (convolution.conv_general_dilated, jax.lax.conv_general_dilated))
            np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * max(1.0, float(np.max(np.abs(ref)))))
    return str(jax.make_jaxpr(functools.partial(loss, convolution.conv_general_dilated))(x, w))


@pytest.mark.parametrize("size, stride, padding", [(2, 1, ((1, 1), (1, 1))), (4, 2, ((1, 1), (1, 1))),
                                                   (3, 2, ((0, 1), (2, 0))), (1, 1, ((1, 1), (1, 1)))])
def test_patch_convolution_equals_xla_convolution(size, stride, padding):
    """`Conv` computes an output map smaller than the kernel as patches x kernel: in float64 the output
    and both gradients equal lax.conv_general_dilated's up to summation order; larger maps keep XLA's own."""
    from fer_jax.models import convolution

    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, size, size, 5)), rng.standard_normal((3, 3, 5, 4))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    with jax.enable_x64(True):
        jaxpr = _assert_equals_xla_convolution(x, w, window_strides=(stride, stride), padding=padding,
                                               dimension_numbers=dn)
        assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr  # the patch path is taken
        big = rng.standard_normal((1, 8, 8, 5))
        jaxpr = str(jax.make_jaxpr(lambda x, w: convolution.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                                            dimension_numbers=dn))(big, w))
        assert "conv_general_dilated" in jaxpr


@pytest.mark.parametrize("kernel, padding, size", [(7, ((3, 3), (3, 3)), 9), (3, ((1, 1), (1, 1)), 5),
                                                   (3, ((2, 0), (0, 1)), 4), (7, ((3, 3), (3, 3)), 2)])
def test_depthwise_convolution_equals_xla_convolution(kernel, padding, size):
    """`Conv`'s depthwise path (ConvNeXt's 7x7, MFTN-FER's 3x3): output and both gradients in float64
    equal XLA's grouped convolution up to summation order, for asymmetric padding and maps below the kernel."""
    rng = np.random.default_rng(2)
    c = 6
    x, w = rng.standard_normal((2, size, size + 1, c)), rng.standard_normal((kernel, kernel, 1, c))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    with jax.enable_x64(True):
        jaxpr = _assert_equals_xla_convolution(x, w, window_strides=(1, 1), padding=padding, dimension_numbers=dn,
                                               feature_group_count=c)
        assert "conv_general_dilated" not in jaxpr and "custom_vjp_call" in jaxpr


@pytest.mark.parametrize("groups, kernel, stride, padding, size", [(4, 7, 1, ((3, 3), (3, 3)), 7),
                                                                   (3, 3, 2, ((1, 0), (2, 1)), 8),
                                                                   (2, 3, 1, ((0, 0), (0, 0)), 3)])
def test_grouped_convolution_equals_xla_convolution(groups, kernel, stride, padding, size):
    """`Conv`'s grouped path (FAER's CC attention: 7x7 in 4 groups): XLA's forward, and the gradients of
    one dense convolution per group (the last case's maps are below the kernel: patches x kernel per group); in
    float64 output and both gradients equal XLA's up to summation order, eager and jit."""
    rng = np.random.default_rng(4)
    cin, cout = 3 * groups, 2 * groups
    x, w = rng.standard_normal((2, size, size + 1, cin)), rng.standard_normal((kernel, kernel, cin // groups, cout))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    with jax.enable_x64(True):
        jaxpr = _assert_equals_xla_convolution(x, w, jit=True, window_strides=(stride, stride), padding=padding,
                                               dimension_numbers=dn, feature_group_count=groups)
        assert "custom_vjp_call" in jaxpr


@pytest.mark.parametrize("padding, kernel, stride, size", [("VALID", 4, 4, 16), ("VALID", 2, 2, 6), ("SAME", 3, 2, 7),
                                                          ("VALID", 4, 4, 8)])
def test_string_padding_takes_the_cpu_paths(padding, kernel, stride, size):
    """"VALID" / "SAME" (ConvNeXt's stem and downsampling) become XLA's own explicit pairs, so that such a
    convolution takes `Conv`'s paths as well: the buffer for a dense one (first three cases), patches x kernel
    for a map below the kernel (the last); output and both gradients equal XLA's in float64."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, size, size, 3)), rng.standard_normal((kernel, kernel, 3, 4))
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    with jax.enable_x64(True):
        jaxpr = _assert_equals_xla_convolution(x, w, window_strides=(stride, stride), padding=padding,
                                               dimension_numbers=dn)
    if size // stride < kernel:
        assert "conv_general_dilated" not in jaxpr and "dot_general" in jaxpr
    else:
        assert "conv_general_dilated" in jaxpr and "custom_vjp_call" in jaxpr


def _bn_relu_conv_loss(conv, x, w, shift, scale):
    """A ResNet-like input to a dense convolution (a BatchNorm's affine map, a residual sum and a ReLU) and a
    weighted sum of its output."""
    y = conv(jax.nn.relu((x - shift) * scale + x[:, ::-1]), w, (1, 1), ((1, 1), (1, 1)),
             dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC")))
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))


def test_dense_convolution_input_is_one_buffer_under_differentiation():
    """Under differentiation `Conv` computes a dense convolution's input into its own buffer (a conditional),
    so that XLA's transpose of it for the kernel gradient reads that buffer instead of recomputing the input
    in its loop; the gradients are bitwise XLA's own, and a forward that is not differentiated is unchanged."""
    from fer_jax.models import convolution

    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((4, 10, 10, 8)).astype(np.float32), rng.standard_normal((3, 3, 8, 6)).astype(np.float32)
    shift, scale = rng.standard_normal(8).astype(np.float32), rng.random(8).astype(np.float32)
    grads, transposes = [], []
    for conv in (convolution.conv_general_dilated, jax.lax.conv_general_dilated):
        step = xla.jit(jax.grad(functools.partial(_bn_relu_conv_loss, conv), (0, 1)), "train")
        compiled = step.lower(x, w, shift, scale).compile()  # one compilation: run and read the same program
        grads.append(compiled(x, w, shift, scale))
        text = compiled.as_text()
        # The fused computations that transpose the input to [C, H, W, N] (C = 8 leads, N = 4 is minor).
        fused = [c for c in text.split("\n\n") if "transpose(" in c and "f32[8,10,10,4]" in c.splitlines()[0]]
        transposes.append([c.count("parameter(") for c in fused])
        assert ("conditional(" in text) == (conv is convolution.conv_general_dilated)
    assert transposes[0] == [1], transposes  # one operand: the input's buffer
    assert max(transposes[1]) > 1, transposes  # XLA's own recomputes the input from x, shift and scale
    for ours, ref in zip(*grads):
        np.testing.assert_array_equal(ours, ref)
    forward = xla.jit(functools.partial(_bn_relu_conv_loss, convolution.conv_general_dilated), "eval")
    assert "conditional(" not in forward.lower(x, w, shift, scale).compile().as_text()


@pytest.mark.parametrize("shape", [(4, 6, 6, 16), (3, 5, 16), (7, 16)])
def test_dense_is_flaxs_dense_with_a_two_dimensional_product(shape):
    """`layers.Dense` gives Flax's `nn.Dense` numbers (float64, outputs and gradients of a loss through it) for
    inputs of any rank, and its kernel gradient reads the [rows, C] input as it is: XLA's own N-d product
    first writes a transposed copy of it or of the output gradient ([C, rows] or [C', rows])."""
    from flax import linen as nn

    from fer_jax.models.layers import Dense

    rows = int(np.prod(shape[:-1]))
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape)
    results, transposed = [], []
    for cls in (Dense, nn.Dense):
        def loss(v, x, cls=cls):
            return jnp.sum(jnp.tanh(cls(32, param_dtype=x.dtype).apply(v, 2.0 * x)) ** 2)

        with jax.enable_x64(True):
            module = cls(32, param_dtype=jnp.float64)
            variables = module.init(jax.random.key(0), x)
            results.append((module.apply(variables, x), *jax.grad(loss, (0, 1))(variables, x)))
        x32, v32 = x.astype(np.float32), jax.tree.map(lambda a: np.asarray(a, np.float32), variables)
        text = xla.jit(jax.grad(loss), "train").lower(v32, x32).compile().as_text()
        transposed.append(any(f"f32[{c},{rows}]" in text for c in (16, 32)))
    ours, ref = (jax.tree.leaves(r) for r in results)
    for a, b in zip(ours, ref):  # the same terms; float64 sums in another order at most
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13 * np.max(np.abs(b)))
    assert not transposed[0]
    assert transposed[1] == (len(shape) > 2)  # a 2-D input is XLA's 2-D product already


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_depthwise_sum_is_computed_once(kind):
    """A depthwise convolution read by several loops (a ConvNeXt block's LayerNorm: its mean, centring and
    output) is summed once, into its own buffer, forward and backward: the program slices the padded input
    once per tap for the forward sum and once per tap for the backward's input-gradient sum, not once per reader."""
    from fer_jax.models import convolution

    rng = np.random.default_rng(7)
    x, taps = rng.standard_normal((2, 9, 9, 8)).astype(np.float32), rng.standard_normal((7, 7, 1, 8)).astype(np.float32)

    def loss(x, taps):
        y = convolution.conv_general_dilated(x, taps, (1, 1), ((3, 3), (3, 3)), dimension_numbers=convolution.NHWC,
                                             feature_group_count=8)
        centred = y - jnp.mean(y, axis=-1, keepdims=True)
        return jnp.sum(jnp.sin(centred) * y)

    fn = jax.grad(loss, 0) if kind == "train" else loss
    text = xla.jit(fn, kind).lower(x, taps).compile().as_text()
    sums = 2 if kind == "train" else 1
    # 48 slices per sum: the centre tap of the symmetric padding reads the unpadded input itself.
    assert text.count("f32[2,9,9,8]{3,2,1,0} slice(") == sums * 48


@pytest.mark.parametrize("shape, kernel, padding", [((2, 9, 10, 6), 7, ((3, 3), (3, 3))),
                                                   ((3, 4, 5, 4), 3, ((2, 0), (0, 1)))])
def test_depthwise_taps_gradient_forms_agree(shape, kernel, padding):
    """The depthwise taps' gradient: the grouped-convolution form that float32 takes equals the per-tap reductions
    that float64 takes (the test above) up to summation order, both computed in float64; float32 takes it."""
    from fer_jax.models import convolution

    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    xp = np.pad(x, ((0, 0), *padding, (0, 0)))
    g = rng.standard_normal((shape[0], xp.shape[1] - kernel + 1, xp.shape[2] - kernel + 1, shape[3]))
    with jax.enable_x64(True):
        conv, reductions = convolution._taps_grad_convolution(xp, g), convolution._taps_grad_reductions(xp, g)
        assert conv.shape == reductions.shape == (kernel, kernel, shape[3])
        np.testing.assert_allclose(conv, reductions, rtol=0, atol=1e-12 * float(np.max(np.abs(reductions))))
    w = rng.standard_normal((kernel, kernel, 1, shape[3])).astype(np.float32)
    dn = jax.lax.conv_dimension_numbers(shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    grad = jax.grad(lambda w, x: jnp.sum(convolution.conv_general_dilated(
        x, w, (1, 1), padding, dimension_numbers=dn, feature_group_count=shape[3]) ** 2))
    x32 = x.astype(np.float32)
    assert "convolution" in xla.jit(grad, "train").lower(w, x32).as_text()  # fer-jax's options
    assert "convolution" not in jax.jit(grad).lower(w, x32).as_text()  # XLA's defaults: YNNPACK convolutions


def test_library_convolutions_follows_the_options_in_effect(monkeypatch):
    """`library_convolutions` answers for the function being traced: fer-jax's options of either kind leave
    YNNPACK's convolutions out; outside them the process's XLA_FLAGS decide, else XLA's default keeps them."""
    monkeypatch.delenv("FER_JAX_XLA_OPTIONS", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    seen = []

    def probe(x):
        seen.append(xla.library_convolutions())
        return x

    x = np.zeros(3, np.float32)
    for kind in ("train", "eval"):
        xla.jit(probe, kind)(x)
    probe(x)
    jax.jit(probe)(x)
    assert seen == [False, False, True, True]
    monkeypatch.setenv("XLA_FLAGS", f"--{xla.FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
    assert not xla.library_convolutions()
    monkeypatch.setenv("XLA_FLAGS", f"--{xla.FLAG}=")
    assert not xla.library_convolutions()
    monkeypatch.setenv("FER_JAX_XLA_OPTIONS", "0")
    monkeypatch.setenv("XLA_FLAGS", "")
    seen.clear()
    xla.jit(probe, "train")(x + 1)
    assert seen == [True]


@pytest.mark.parametrize("case", ["depthwise", "patch", "grouped"])
def test_bfloat16_convolution_paths_sum_in_float32(case):
    """Under `compute_dtype=bfloat16` every path rounds once: each output is within half a bfloat16 ulp (2^-8 of
    its magnitude, plus float32 summation error) of the exact sum of the bfloat16 inputs, as XLA's convolution
    is (measured: within 0.98 of the bound, as lax.conv_general_dilated). Summing the 49 depthwise taps in
    bfloat16 instead fails it by orders of magnitude where terms cancel."""
    from fer_jax.models import convolution

    rng = np.random.default_rng(3)
    if case == "depthwise":
        x, w, pad, groups = rng.standard_normal((2, 9, 9, 16)), rng.standard_normal((7, 7, 1, 16)), 3, 16
    elif case == "grouped":
        x, w, pad, groups = rng.standard_normal((2, 7, 7, 64)), rng.standard_normal((7, 7, 16, 8)), 3, 4
    else:
        x, w, pad, groups = rng.standard_normal((2, 2, 2, 64)), rng.standard_normal((3, 3, 64, 8)), 1, 1
    xb, wb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    args = ((1, 1), ((pad, pad), (pad, pad)))
    ours = convolution.conv_general_dilated(xb, wb, *args, dimension_numbers=dn, feature_group_count=groups)
    assert ours.dtype == jnp.bfloat16
    with jax.enable_x64(True):
        exact = np.asarray(jax.lax.conv_general_dilated(np.asarray(xb, np.float64), np.asarray(wb, np.float64), *args,
                                                        dimension_numbers=dn, feature_group_count=groups))
    err = np.abs(np.asarray(ours, np.float64) - exact)
    assert np.all(err <= 2.0 ** -8 * np.abs(exact) + 1e-5 * np.max(np.abs(exact)))
    grads = jax.grad(lambda x, w: jnp.sum(convolution.conv_general_dilated(
        x, w, *args, dimension_numbers=dn, feature_group_count=groups).astype(jnp.float32) ** 2), (0, 1))(xb, wb)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


def test_attention_softmax_in_bfloat16_rounds_once():
    """FAER's and MFTN-FER's token softmax (`layers.softmax`): under bfloat16 each weight is within half a
    bfloat16 ulp (2^-8 relative, plus float32 error) of the exact softmax of its bfloat16 logits; jax.nn.softmax
    in bfloat16 misses that by up to 7 % (3136 tokens). float32 is jax.nn.softmax itself."""
    from fer_jax.models import layers

    x = np.random.default_rng(4).normal(0, 2, (2, 3136, 8)).astype(np.float32)
    np.testing.assert_array_equal(layers.softmax(jnp.asarray(x), axis=1), jax.nn.softmax(jnp.asarray(x), axis=1))
    xb = jnp.asarray(x, jnp.bfloat16)
    ours = layers.softmax(xb, axis=1)
    assert ours.dtype == jnp.bfloat16
    z = np.asarray(xb, np.float64)
    exact = np.exp(z - z.max(axis=1, keepdims=True))
    exact /= exact.sum(axis=1, keepdims=True)
    assert np.all(np.abs(np.asarray(ours, np.float64) - exact) <= (2.0 ** -8 + 1e-6) * exact)


def test_gelu_is_the_exact_gelu():
    """`layers.gelu` (torch's erf formula) equals Flax's exact GELU (the erfc formula) in float64 to ~1e-16 of
    |x|, gradients included, and torch's float64 GELU; it keeps bfloat16 inputs bfloat16."""
    import torch
    from flax import linen as nn

    from fer_jax.models import layers

    x = np.concatenate([np.linspace(-12.0, 12.0, 2001), np.random.default_rng(5).standard_normal(1000) * 3])
    with jax.enable_x64(True):
        ours, flax_exact = layers.gelu(x), nn.gelu(x, approximate=False)
        np.testing.assert_allclose(ours, flax_exact, rtol=0, atol=1e-15 * np.max(np.abs(x)))
        grads = [jax.vmap(jax.grad(f))(x) for f in (layers.gelu, lambda v: nn.gelu(v, approximate=False))]
        np.testing.assert_allclose(grads[0], grads[1], rtol=0, atol=1e-14)
    np.testing.assert_allclose(ours, torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), rtol=0, atol=1e-15 * 12)
    assert layers.gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


def _torch_max_pool(x: np.ndarray, g: np.ndarray, window: int, stride: int, padding: int):
    """torch's max_pool2d of NHWC `x` and its input gradient for the output gradient `g`, both NHWC."""
    import torch

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    yt = torch.nn.functional.max_pool2d(xt, window, stride, padding)
    yt.backward(torch.from_numpy(g.transpose(0, 3, 1, 2).copy()))
    return yt.detach().numpy().transpose(0, 2, 3, 1), xt.grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("window, stride, padding, size", [(3, 2, 1, 9), (3, 2, 1, 12), (2, 2, 0, 8), (3, 1, 1, 6)])
def test_max_pool_gradient_goes_to_torchs_first_maximum(window, stride, padding, size):
    """`layers.max_pool_torch` and its own gradient against torch's max_pool2d in float64, on inputs with tied
    maxima (small integers after a ReLU): each window's gradient goes to its first maximum in row-major order."""
    import torch

    from fer_jax.models import layers

    rng = np.random.default_rng(size + window)
    x = np.maximum(rng.integers(-2, 3, (2, size, size, 5)), 0).astype(np.float64)
    with jax.enable_x64(True):
        y, vjp = jax.vjp(lambda v: layers.max_pool_torch(v, window, stride, padding), jnp.asarray(x))
        g = rng.standard_normal(y.shape)
        (dx,) = vjp(jnp.asarray(g))
        dx_jit = jax.jit(jax.grad(lambda v: jnp.vdot(layers.max_pool_torch(v, window, stride, padding), g)))(x)
    y_torch, theirs = _torch_max_pool(x, g, window, stride, padding)
    np.testing.assert_array_equal(y, y_torch)
    # a position in overlapping windows sums their gradients, in another order than torch: float64 rounding only
    np.testing.assert_allclose(dx, theirs, rtol=0, atol=1e-13)
    np.testing.assert_allclose(dx_jit, theirs, rtol=0, atol=1e-13)
    # the inputs do tie: routing every window to its last maximum would differ from torch
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    windows = torch.nn.functional.unfold(torch.nn.functional.pad(xt, (padding,) * 4, value=-np.inf),
                                         window, stride=stride)
    assert ((windows == windows.max(dim=1, keepdim=True).values).sum(dim=1) > 1).any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("window, stride, padding, size", [(3, 2, 1, 9), (3, 2, 1, 12), (2, 2, 0, 8), (3, 1, 1, 6)])
def test_max_pool_without_gradient_equals_torch(window, stride, padding, size, dtype):
    """The evaluation path (no gradient: rows, then columns) gives torch's max_pool2d bit for bit, eager and jitted,
    with ties, NaN, -inf and windows reaching into the padding, and the same as the training forward's taps."""
    import torch

    from fer_jax.models import layers

    rng = np.random.default_rng(size + window)
    x = rng.standard_normal((2, size, size, 5)).astype(dtype)
    x[0, :2, :2, 0] = -np.inf  # a window all -inf but for the padding
    x[1, 1, 1, 1] = x[1, 0, 2, 2] = np.nan
    x[:, :, :, 3] = np.maximum(rng.integers(-2, 3, (2, size, size)), 0)  # ties
    theirs = torch.nn.functional.max_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), window, stride, padding)
    theirs = theirs.numpy().transpose(0, 2, 3, 1)
    with jax.enable_x64(dtype == np.float64):
        eager = np.asarray(layers.max_pool_torch(jnp.asarray(x), window, stride, padding))
        jitted = np.asarray(jax.jit(layers.max_pool_torch, static_argnums=(1, 2, 3))(jnp.asarray(x), window, stride,
                                                                                       padding))
        taps = np.asarray(layers._max_pool_taps(jnp.asarray(x), window, stride, padding)[0])
    assert eager.dtype == dtype and np.isnan(theirs).any() and np.isneginf(theirs).any()
    for ours in (eager, jitted, taps):
        np.testing.assert_array_equal(ours, theirs)


def test_max_pool_gradient_routing_survives_fusion():
    """Under jit XLA may compute a fused pool input twice with different roundings (BatchNorm, then ReLU), so
    routing by comparing the input with the pooled output sent gradients astray (3.2 relative, float64); the
    routing is decided among the taps themselves, so the jitted gradient equals the eager one."""
    from fer_jax.models import layers

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 48, 48, 3)), rng.standard_normal((7, 7, 3, 16)) * 0.2
    g = rng.standard_normal((4, 12, 12, 16))

    def loss(w):
        y = jax.lax.conv_general_dilated(x, w, (2, 2), ((3, 3), (3, 3)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jnp.maximum((y - y.mean(axis=(0, 1, 2))) / jnp.sqrt(y.var(axis=(0, 1, 2)) + 1e-5), 0)
        return jnp.vdot(layers.max_pool_torch(y, window=3, stride=2, padding=1), g)

    with jax.enable_x64(True):
        eager, jitted = jax.grad(loss)(w), jax.jit(jax.grad(loss))(w)
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-12 * np.abs(eager).max())  # float64 summation order


def test_max_pool_with_nan_follows_torch():
    """A NaN is a maximum by torch's rule (greater, or NaN): the window's output is NaN and its gradient goes to
    the window's last NaN, as torch's max_pool2d sends it."""
    from fer_jax.models import layers

    x = np.random.default_rng(3).standard_normal((1, 6, 6, 2))
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = x[0, 4, 4, 1] = np.nan  # the first two share the window at (0, 0)
    g = np.random.default_rng(4).standard_normal((1, 3, 3, 2))
    with jax.enable_x64(True):
        y, vjp = jax.vjp(lambda v: layers.max_pool_torch(v, 2, 2, 0), jnp.asarray(x))
        (dx,) = vjp(jnp.asarray(g))
        y, dx = np.asarray(y), np.asarray(dx)  # float64 arrays: indexed outside x64, jax would truncate them
    y_torch, dx_torch = _torch_max_pool(x, g, 2, 2, 0)
    np.testing.assert_array_equal(y, y_torch)  # NaN where torch has NaN
    np.testing.assert_array_equal(dx, dx_torch)
    assert np.isnan(np.asarray(y)).sum() == 2 and dx[0, 1, 0, 0] == g[0, 0, 0, 0] and dx[0, 0, 1, 0] == 0


def test_max_pool_of_minus_infinity_follows_torch():
    """A window whose input values are all -inf has the output -inf, and torch sends its gradient to the
    window's first tap inside the input (its search starts there, at -inf): at a border, where the window's
    first tap is padding, and inside the map."""
    from fer_jax.models import layers

    x = np.random.default_rng(5).standard_normal((1, 7, 7, 3))
    x[0, 0:2, 0:2, 0] = -np.inf  # all the input of the corner window (3, stride 2, padding 1)
    x[0, 3:6, 3:6, 1] = -np.inf  # the window at (2, 2) and parts of its neighbours
    x[0, 0:2, 3:6, 2] = x[0, 3:6, 0:2, 2] = -np.inf  # the windows at (0, 2), top, and (2, 0), left
    g = np.random.default_rng(6).standard_normal((1, 4, 4, 3))
    with jax.enable_x64(True):
        y, vjp = jax.vjp(lambda v: layers.max_pool_torch(v, 3, 2, 1), jnp.asarray(x))
        (dx,) = vjp(jnp.asarray(g))
        dx_jit = jax.jit(jax.grad(lambda v: jnp.vdot(layers.max_pool_torch(v, 3, 2, 1), g)))(x)
        y, dx, dx_jit = np.asarray(y), np.asarray(dx), np.asarray(dx_jit)  # float64, as in the test above
    y_torch, dx_torch = _torch_max_pool(x, g, 3, 2, 1)
    np.testing.assert_array_equal(y, y_torch)
    assert y[0, 0, 0, 0] == y[0, 2, 2, 1] == y[0, 0, 2, 2] == y[0, 2, 0, 2] == -np.inf
    # a position in overlapping windows sums their gradients, in another order than torch: float64 rounding only
    np.testing.assert_allclose(dx, dx_torch, rtol=0, atol=1e-13)
    np.testing.assert_allclose(dx_jit, dx_torch, rtol=0, atol=1e-13)
    assert dx[0, 0, 0, 0] == g[0, 0, 0, 0] and dx[0, 3, 3, 1] == g[0, 2, 2, 1]
    assert dx[0, 0, 3, 2] == g[0, 0, 2, 2] and dx[0, 3, 0, 2] == g[0, 2, 0, 2]
