"""The networks of the paper (bearpaw/pytorch-classification's CIFAR ResNet and VGG),
their registry, and packed copies."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasgen.models import build_model, copies_of, packed, resnet, vgg
from kerasgen.models.common import BN_EPSILON, BN_MOMENTUM, batch_norm

# ---------------------------------------------------------------- independent formulas

VGG_E = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M")


def resnet_param_formula(depth: int, classes: int) -> int:
    """Trainable parameters of bearpaw's CIFAR ResNet (BasicBlock, 1x1 conv + BN
    projection only where the shape changes, BN has gamma and beta)."""
    n = (depth - 2) // 6
    conv = lambda k, cin, cout: k * k * cin * cout  # noqa: E731  (no bias)
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 3, 16) + bn(16)
    cin = 16
    for stage, f in enumerate((16, 32, 64)):
        for b in range(n):
            stride = 2 if (stage > 0 and b == 0) else 1
            total += conv(3, cin, f) + bn(f) + conv(3, f, f) + bn(f)
            if stride != 1 or cin != f:
                total += conv(1, cin, f) + bn(f)
            cin = f
    return total + 64 * classes + classes


def vgg_param_formula(cfg, classes: int, batch_norm: bool = True) -> int:
    total, cin = 0, 3
    for item in cfg:
        if item == "M":
            continue
        total += 9 * cin * item + item + (2 * item if batch_norm else 0)
        cin = item
    return total + 512 * classes + classes


def trainable_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


# ---------------------------------------------------------------- fixtures (built once)

@pytest.fixture(scope="module")
def resnet110():
    return resnet(110)


@pytest.fixture(scope="module")
def resnet20():
    return build_model("resnet20")


@pytest.fixture(scope="module")
def vgg19_bn():
    return build_model("vgg19")


@pytest.fixture(scope="module")
def vgg19_nobn():
    return build_model("vgg19_nobn")


# ---------------------------------------------------------------- parameter counts

def test_formulas_reproduce_the_published_counts():
    # Guards the formulas themselves against the numbers quoted by the paper's code.
    assert resnet_param_formula(110, 10) == 1_730_714
    assert resnet_param_formula(20, 10) == 272_474
    assert vgg_param_formula(VGG_E, 10) == 20_040_522


def test_resnet110_cifar10_has_1730714_trainable_parameters(resnet110):
    assert trainable_count(resnet110) == 1_730_714


def test_resnet20_cifar10_has_272474_trainable_parameters(resnet20):
    assert trainable_count(resnet20) == 272_474


def test_resnet56_trainable_parameters_match_formula():
    assert trainable_count(resnet(56)) == resnet_param_formula(56, 10)


def test_resnet110_cifar100_head_trainable_parameters_match_formula():
    model = resnet(110, num_classes=100)
    expected = resnet_param_formula(110, 100)
    assert expected == 1_730_714 - (64 * 10 + 10) + (64 * 100 + 100)
    assert trainable_count(model) == expected


def test_vgg19_bn_cifar10_has_20040522_trainable_parameters(vgg19_bn):
    assert trainable_count(vgg19_bn) == 20_040_522


def test_vgg19_bn_moving_statistics_are_not_trainable(vgg19_bn):
    bn_channels = sum(layer.gamma.shape[0]
                      for layer in layers_of(vgg19_bn, keras.layers.BatchNormalization))
    non_trainable = sum(int(np.prod(v.shape)) for v in vgg19_bn.non_trainable_weights)
    assert non_trainable == 2 * bn_channels  # moving mean + moving variance


def test_vgg19_nobn_trainable_parameters_match_formula(vgg19_nobn):
    assert trainable_count(vgg19_nobn) == vgg_param_formula(VGG_E, 10, batch_norm=False)
    assert not vgg19_nobn.non_trainable_weights


def test_vgg19_cifar100_head_trainable_parameters_match_formula():
    model = vgg(19, num_classes=100)
    assert trainable_count(model) == vgg_param_formula(VGG_E, 100)


# ---------------------------------------------------------------- ResNet structure

@pytest.mark.parametrize("depth", [8, 20, 110])
def test_resnet_has_three_stages_of_n_blocks(depth, resnet20, resnet110):
    model = {20: resnet20, 110: resnet110}.get(depth) or resnet(depth, input_shape=(8, 8, 3))
    n = (depth - 2) // 6
    adds = {layer.name for layer in model.layers if layer.name.endswith("_add")}
    assert adds == {f"stage{s}_block{b}_add" for s in (1, 2, 3) for b in range(1, n + 1)}
    assert all(isinstance(model.get_layer(name), keras.layers.Add) for name in adds)


def test_resnet_projection_shortcuts_only_where_shape_changes(resnet110):
    shortcuts = {layer.name for layer in resnet110.layers if layer.name.endswith("_shortcut_conv")}
    assert shortcuts == {"stage2_block1_shortcut_conv", "stage3_block1_shortcut_conv"}
    for name in shortcuts:
        conv = resnet110.get_layer(name)
        assert conv.kernel_size == (1, 1) and conv.strides == (2, 2)
        bn = resnet110.get_layer(name.replace("_conv", "_bn"))
        assert isinstance(bn, keras.layers.BatchNormalization)
    assert sum(1 for layer in resnet110.layers if layer.name.endswith("_shortcut_bn")) == 2


def test_resnet_convs_have_no_bias(resnet110):
    convs = layers_of(resnet110, keras.layers.Conv2D)
    assert len(convs) == 1 + 2 * 54 + 2
    assert all(not conv.use_bias and conv.bias is None for conv in convs)


def test_resnet_stride2_convs_only_at_first_block_of_stages_2_and_3(resnet110):
    strided = {conv.name for conv in layers_of(resnet110, keras.layers.Conv2D)
               if conv.strides != (1, 1)}
    assert strided == {"stage2_block1_conv1", "stage2_block1_shortcut_conv",
                       "stage3_block1_conv1", "stage3_block1_shortcut_conv"}
    assert all(resnet110.get_layer(n).strides == (2, 2) for n in strided)


def test_resnet_stage_outputs_are_32_16_8_on_32x32(resnet20):
    shapes = [tuple(resnet20.get_layer(f"stage{s}_block3_out").output.shape[1:])
              for s in (1, 2, 3)]
    assert shapes == [(32, 32, 16), (16, 16, 32), (8, 8, 64)]
    assert tuple(resnet20.get_layer("stage2_block1_out").output.shape[1:]) == (16, 16, 32)


def test_resnet_strided_conv_pads_symmetrically_like_pytorch():
    # PyTorch's conv3x3(stride=2, padding=1) on an even map reads rows -1, 1, 3, ...:
    # a single 1 at (0, 0) reaches output (0, 0) through the kernel tap (1, 1) only.
    model = resnet(8, input_shape=(4, 4, 1))
    conv = model.get_layer("stage2_block1_conv1")
    sub = keras.Model(model.get_layer("stage2_block1_conv1_pad").input, conv.output)
    kernel = np.zeros(conv.kernel.shape, np.float32)
    kernel[1, 1, 0, 0] = 1.0
    conv.kernel.assign(kernel)
    x = np.zeros((1, 4, 4, 16), np.float32)
    x[0, 2, 2, 0] = 5.0  # even position: PyTorch's output (1, 1) centres on it
    y = np.asarray(sub(x))
    assert y.shape == (1, 2, 2, 32)
    assert y[0, 1, 1, 0] == 5.0 and np.count_nonzero(y) == 1


def test_resnet_has_a_single_dense_head_after_global_pooling(resnet110):
    dense = layers_of(resnet110, keras.layers.Dense)
    assert [d.name for d in dense] == ["classifier"]
    assert dense[0].kernel.shape == (64, 10)
    assert isinstance(resnet110.get_layer("pool"), keras.layers.GlobalAveragePooling2D)
    assert resnet110.output_shape == (None, 10)


def test_resnet_layer_names_derive_from_position(resnet20):
    names = {layer.name for layer in resnet20.layers}
    assert {"stem_conv", "stem_bn", "stage2_block3_conv1", "stage2_block3_bn2",
            "stage3_block1_shortcut_conv", "classifier"} <= names
    assert "stage2_block4_conv1" not in names  # ResNet-20 has 3 blocks per stage
    assert resnet20.get_layer("stage2_block3_conv1").filters == 32


# ---------------------------------------------------------------- VGG structure

def test_vgg19_bn_has_16_biased_convs_16_bn_and_5_pools(vgg19_bn):
    convs = layers_of(vgg19_bn, keras.layers.Conv2D)
    assert len(convs) == 16
    assert all(conv.use_bias and conv.kernel_size == (3, 3) for conv in convs)
    assert [c.filters for c in convs] == [x for x in VGG_E if x != "M"]
    assert len(layers_of(vgg19_bn, keras.layers.BatchNormalization)) == 16
    assert len(layers_of(vgg19_bn, keras.layers.MaxPooling2D)) == 5


def test_vgg19_nobn_has_no_batch_norm(vgg19_nobn):
    assert len(layers_of(vgg19_nobn, keras.layers.BatchNormalization)) == 0
    assert len(layers_of(vgg19_nobn, keras.layers.Conv2D)) == 16
    assert len(layers_of(vgg19_nobn, keras.layers.MaxPooling2D)) == 5


def test_vgg_has_a_single_dense_head_on_512_features(vgg19_bn):
    dense = layers_of(vgg19_bn, keras.layers.Dense)
    assert len(dense) == 1 and dense[0].kernel.shape == (512, 10)


def test_vgg_bn_follows_each_conv_before_relu(vgg19_bn):
    layer_names = [layer.name for layer in vgg19_bn.layers]
    i = layer_names.index("stage3_conv4")
    assert layer_names[i + 1:i + 3] == ["stage3_conv4_bn", "stage3_conv4_relu"]


# ---------------------------------------------------------------- initialization

def test_conv_kernels_are_untruncated_he_normal_fan_out(vgg19_bn, resnet110):
    for kernel in (vgg19_bn.get_layer("stage5_conv4").kernel,
                   resnet110.get_layer("stage3_block10_conv2").kernel):
        w = np.asarray(kernel)
        k, out = w.shape[0], w.shape[-1]
        expected = math.sqrt(2.0 / (k * k * out))
        assert w.std() == pytest.approx(expected, rel=0.03)
        assert abs(w.mean()) < 0.05 * expected
        # Untruncated (PyTorch's normal_): about 4.6% of a normal lies beyond 2 sigma.
        assert 0.035 < np.mean(np.abs(w) > 2 * expected) < 0.06


def test_vgg_conv_and_dense_biases_start_at_zero(vgg19_bn):
    for conv in layers_of(vgg19_bn, keras.layers.Conv2D):
        assert not np.any(np.asarray(conv.bias))
    head = vgg19_bn.get_layer("classifier")
    assert not np.any(np.asarray(head.bias))
    assert np.asarray(head.kernel).std() == pytest.approx(0.01, rel=0.05)


def test_resnet_head_uses_pytorch_linear_uniform_init(resnet110):
    head = resnet110.get_layer("classifier")
    bound = 1.0 / math.sqrt(64)
    for w in (np.asarray(head.kernel), np.asarray(head.bias)):
        assert np.all(np.abs(w) <= bound)
    assert np.abs(np.asarray(head.kernel)).max() > 0.9 * bound  # not a narrower init


def test_bn_starts_at_gamma_1_beta_0_with_pytorch_momentum_and_epsilon(vgg19_bn, resnet110):
    assert (BN_MOMENTUM, BN_EPSILON) == (0.9, 1e-5)
    bns = (layers_of(vgg19_bn, keras.layers.BatchNormalization)
           + layers_of(resnet110, keras.layers.BatchNormalization))
    assert len(bns) == 16 + (1 + 2 * 54 + 2)
    for bn in bns:
        assert np.all(np.asarray(bn.gamma) == 1.0) and np.all(np.asarray(bn.beta) == 0.0)
        assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)


def test_bn_moving_average_update_matches_pytorch_momentum_0_1():
    # PyTorch: running = 0.9 * running + 0.1 * batch_mean, starting from 0.
    bn = batch_norm("bn")
    x = np.random.default_rng(0).normal(3.0, 1.0, (8, 4, 4, 2)).astype(np.float32)
    bn(x, training=True)
    batch_mean = x.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(bn.moving_mean), 0.1 * batch_mean, rtol=1e-5)


# ---------------------------------------------------------------- small inputs

@pytest.mark.parametrize("builder", [
    lambda s: resnet(8, num_classes=10, input_shape=s),
    lambda s: vgg(11, num_classes=10, input_shape=s),
    lambda s: vgg(19, num_classes=10, input_shape=s),
], ids=["resnet8", "vgg11", "vgg19"])
@pytest.mark.parametrize("size", [8, 2])
def test_small_inputs_give_batch_by_classes_outputs(builder, size):
    model = builder((size, size, 1))
    x = np.random.default_rng(0).random((3, size, size, 1)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    assert y.shape == (3, 10)
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("depth", [11, 19])
@pytest.mark.parametrize("size,pools", [(8, 3), (2, 1), (1, 0), (32, 5)])
def test_vgg_skips_pools_that_would_shrink_below_one_pixel(depth, size, pools):
    model = vgg(depth, input_shape=(size, size, 1))
    assert len(layers_of(model, keras.layers.MaxPooling2D)) == pools
    assert model.get_layer("flatten").output.shape[-1] == 512


def test_resnet8_on_8x8_downsamples_to_2x2():
    model = resnet(8, input_shape=(8, 8, 1))
    assert tuple(model.get_layer("stage3_block1_out").output.shape[1:]) == (2, 2, 64)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("depth,shown", [(111, "111"), (7, "7"), ("20", "'20'"), (2, "2"),
                                         (True, "True"), (20.0, "20.0")])
def test_resnet_rejects_bad_depth_and_repeats_it(depth, shown):
    with pytest.raises(ValueError, match=rf"depth={shown}"):
        resnet(depth)


@pytest.mark.parametrize("depth", [12, 19.0, "19", 0])
def test_vgg_rejects_bad_depth_and_repeats_it(depth):
    with pytest.raises(ValueError, match=rf"depth={depth!r}"):
        vgg(depth)


@pytest.mark.parametrize("builder", [lambda **k: resnet(8, **k), lambda **k: vgg(11, **k)])
def test_num_classes_below_two_is_rejected_and_repeated(builder):
    with pytest.raises(ValueError, match=r"num_classes=1\b"):
        builder(num_classes=1)
    with pytest.raises(ValueError, match=r"num_classes=10\.0"):
        builder(num_classes=10.0)


@pytest.mark.parametrize("builder", [lambda **k: resnet(8, **k), lambda **k: vgg(11, **k)])
def test_two_dimensional_input_shape_is_rejected_and_repeated(builder):
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8\)"):
        builder(input_shape=(8, 8))
    with pytest.raises(ValueError, match=r"input_shape=\(8, 0, 1\)"):
        builder(input_shape=(8, 0, 1))


@pytest.mark.parametrize("name", ["resnet111", "vgg12", "alexnet", "resnet20_nobn",
                                  "resnet7", "vgg19_bn", "Resnet20"])
def test_registry_rejects_unknown_names_and_repeats_them(name):
    with pytest.raises(ValueError, match=rf"'{name}'"):
        build_model(name)


def test_registry_builds_resnet20(resnet20):
    assert resnet20.name == "resnet20"
    assert trainable_count(resnet20) == resnet_param_formula(20, 10)


def test_registry_vgg19_has_bn_and_vgg19_nobn_has_not(vgg19_bn, vgg19_nobn):
    assert vgg19_bn.name == "vgg19" and vgg19_nobn.name == "vgg19_nobn"
    assert len(layers_of(vgg19_bn, keras.layers.BatchNormalization)) == 16
    assert len(layers_of(vgg19_nobn, keras.layers.BatchNormalization)) == 0


def test_registry_passes_classes_and_input_shape():
    model = build_model("vgg11", num_classes=7, input_shape=(8, 8, 1))
    assert model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 7)


# ---------------------------------------------------------------- packed copies

def tiny_resnet():
    return resnet(8, num_classes=4, input_shape=(8, 8, 1))


@pytest.fixture(scope="module")
def packed3():
    return packed(tiny_resnet, 3)


def test_packed_has_k_outputs_named_copy_k(packed3):
    assert list(packed3.output_names) == ["copy_0", "copy_1", "copy_2"]
    x = np.zeros((2, 8, 8, 1), np.float32)
    outputs = packed3(x)
    assert len(outputs) == 3 and all(tuple(o.shape) == (2, 4) for o in outputs)
    assert [c.name for c in copies_of(packed3)] == ["copy_0_net", "copy_1_net", "copy_2_net"]


def test_packed_copies_start_with_equal_weights_and_outputs(packed3):
    nets = copies_of(packed3)
    first = nets[0].get_weights()
    for net in nets[1:]:
        for a, b in zip(first, net.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(1).random((2, 8, 8, 1)).astype(np.float32)
    outs = [np.asarray(o) for o in packed3(x, training=False)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_packed_copies_start_from_given_initial_weights():
    reference = tiny_resnet()
    weights = [w + np.float32(0.5) for w in reference.get_weights()]  # not any fresh init
    model = packed(tiny_resnet, 2, initial_weights=weights)
    for net in copies_of(model):
        for a, b in zip(weights, net.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_packed_copies_share_no_variables(packed3):
    ids = [{id(v) for v in net.weights} for net in copies_of(packed3)]
    assert all(ids[i].isdisjoint(ids[j]) for i in range(3) for j in range(i + 1, 3))
    assert len(packed3.trainable_weights) == 3 * len(copies_of(packed3)[0].trainable_weights)


def test_gradient_step_on_copy0_loss_changes_only_copy0():
    model = packed(tiny_resnet, 3)
    nets = copies_of(model)
    before = [[np.asarray(v).copy() for v in net.trainable_weights] for net in nets]
    rng = np.random.default_rng(2)
    x = rng.random((4, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 4, 4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        loss = loss_fn(y, outputs[0])
    grads = tape.gradient(loss, variables)
    own = {id(v) for v in nets[0].trainable_weights}
    assert all((g is not None) == (id(v) in own) for g, v in zip(grads, variables))
    grads = [tf.zeros(v.shape) if g is None else g for g, v in zip(grads, variables)]
    keras.optimizers.SGD(learning_rate=0.5, momentum=0.9).apply_gradients(zip(grads, variables))
    after = [[np.asarray(v) for v in net.trainable_weights] for net in nets]
    assert any(not np.array_equal(a, b) for a, b in zip(before[0], after[0]))
    for k in (1, 2):
        for a, b in zip(before[k], after[k], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("copies", [0, -1, 2.0, True])
def test_packed_rejects_non_positive_copies(copies):
    with pytest.raises(ValueError, match=rf"copies={copies!r}"):
        packed(tiny_resnet, copies)
