"""The PS-VAE network: shapes, size, the frozen orthogonal split, the label map, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from psvae_opt.errors import DataError
from psvae_opt.model.network import PSVAE, _DecoderLayer, _EncoderLayer, count_parameters, random_rotation, same_padding


@pytest.mark.parametrize(
    ("shape", "code"),
    [
        ((1, 64, 64), (512, 1, 1)),
        ((1, 128, 128), (512, 2, 2)),
        ((1, 192, 192), (512, 3, 3)),
        ((2, 128, 128), (512, 2, 2)),
    ],
)
def test_output_shapes(shape, code):
    torch.manual_seed(0)
    model = PSVAE(shape, n_labels=4, n_unsup=2)
    out = model(torch.rand(3, *shape))
    assert model.code_shape == code
    assert out.x_hat.shape == (3, *shape)
    assert out.y_hat.shape == (3, 4)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 6)
    assert 0 <= out.x_hat.min() and out.x_hat.max() <= 1


def test_odd_and_non_square_frames_come_back_at_their_size():
    model = PSVAE((1, 100, 70), 3, 1, channels=(4, 4, 4, 4, 4))
    assert model(torch.rand(2, 1, 100, 70)).x_hat.shape == (2, 1, 100, 70)


def test_parameter_count_of_the_paper_model():
    model = PSVAE((1, 128, 128), n_labels=4, n_unsup=2)
    # conv weights+biases: encoder 4,353,792 + decoder 4,353,281; heads 2 x 2048 x 6 + 12;
    # decoder input layer 6 x 2048 + 2048; label map 2 x 4
    assert count_parameters(model) == 4_353_792 + 4_353_281 + 24_588 + 14_336 + 8 == 8_746_005
    assert count_parameters(model) == pytest.approx(8.75e6, rel=0.01)


@pytest.mark.parametrize(
    ("size", "kernel", "stride"), [(64, 5, 2), (7, 5, 2), (8, 5, 5), (4, 5, 5), (12, 5, 5), (9, 4, 1), (6, 1, 2)]
)
def test_same_padding_and_the_decoder_is_the_exact_adjoint(size: int, kernel: int, stride: int):
    out, before, after = same_padding(size, kernel, stride)
    assert out == math.ceil(size / stride)
    enc = _EncoderLayer(1, 1, kernel, stride, (size, size), ((before, after), (before, after)), False)
    dec = _DecoderLayer(1, 1, kernel, stride, (out, out), (size, size), ((before, after), (before, after)))
    dec.conv.weight.data.copy_(enc.conv.weight.data)
    enc.conv.bias.data.zero_()
    dec.conv.bias.data.zero_()
    x, y = torch.randn(2, 1, size, size, dtype=torch.float64), torch.randn(2, 1, out, out, dtype=torch.float64)
    enc.double(), dec.double()
    padded = F.pad(x, enc.pad) if enc.pad is not None else x
    cx = F.conv2d(padded, enc.conv.weight, None, stride, enc.conv.padding)
    assert cx.shape[-1] == out
    assert dec(y).shape[-1] == size
    # <conv(x), y> == <x, conv_transpose(y)>
    assert torch.allclose((cx * y).sum(), (x * dec(y)).sum(), atol=1e-9)


def test_patch_layers_equal_the_plain_convolutions():
    from psvae_opt.model.network import _patch_conv, _patch_conv_transpose

    x, w, b = (
        torch.randn(3, 7, 10, 15, dtype=torch.float64),
        torch.randn(4, 7, 5, 5, dtype=torch.float64),
        torch.randn(4, dtype=torch.float64),
    )
    assert torch.allclose(_patch_conv(x, w, b), F.conv2d(x, w, b, stride=5))
    z, wt, bt = (
        torch.randn(3, 4, 2, 3, dtype=torch.float64),
        torch.randn(4, 7, 5, 5, dtype=torch.float64),
        torch.randn(7, dtype=torch.float64),
    )
    assert torch.allclose(_patch_conv_transpose(z, wt, bt), F.conv_transpose2d(z, wt, bt, stride=5))


def test_rotation_rows_are_orthonormal_and_frozen():
    model = PSVAE((1, 64, 64), n_labels=4, n_unsup=3, channels=(4, 4, 4, 4, 4), seed=7)
    r = model.rotation
    a, b = r[:4], r[4:]
    assert torch.allclose(a @ a.T, torch.eye(4), atol=1e-5)
    assert torch.allclose(b @ b.T, torch.eye(3), atol=1e-5)
    assert torch.allclose(a @ b.T, torch.zeros(4, 3), atol=1e-5)
    assert all(p is not r for p in model.parameters()) and not r.requires_grad
    assert "rotation" in model.state_dict()
    before = r.clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.rand(4, 1, 64, 64)).x_hat.sum().backward()
    opt.step()
    assert torch.equal(model.rotation, before)


def test_rotation_depends_on_the_seed_only():
    assert torch.equal(random_rotation(5, 1), random_rotation(5, 1))
    assert not torch.allclose(random_rotation(5, 1), random_rotation(5, 2))


def test_means_are_the_rotated_head_and_labels_the_diagonal_map():
    model = PSVAE((1, 32, 32), n_labels=2, n_unsup=2, channels=(4, 4, 4, 4, 4))
    with torch.no_grad():
        model.label_scale.copy_(torch.tensor([2.0, -3.0]))
        model.label_bias.copy_(torch.tensor([0.5, 1.0]))
    x = torch.rand(5, 1, 32, 32)
    h = model.to_mean(model.encoder(x).flatten(1))
    out = model(x, sample=False)
    assert torch.allclose(out.mu, h @ model.rotation.T, atol=1e-6)
    assert torch.allclose(out.y_hat, out.mu[:, :2] * torch.tensor([2.0, -3.0]) + torch.tensor([0.5, 1.0]), atol=1e-6)
    assert torch.equal(out.z, out.mu)


def test_sampling_uses_exp_half_logvar_as_standard_deviation():
    model = PSVAE((1, 32, 32), n_labels=1, n_unsup=1, channels=(4, 4, 4, 4, 4))
    with torch.no_grad():
        model.to_logvar.weight.zero_()
        model.to_logvar.bias.fill_(math.log(0.25))  # variance 0.25 -> std 0.5
    torch.manual_seed(0)
    out = model(torch.rand(1, 1, 32, 32).expand(4000, 1, 32, 32))
    std = (out.z - out.mu).std(0)
    assert torch.allclose(std, torch.full((2,), 0.5), rtol=0.05)  # exp(logvar) would give 0.25


def test_the_seed_fixes_the_initial_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = PSVAE((1, 32, 32), 2, 2, channels=(4, 4, 4, 4, 4), seed=3)
    assert torch.equal(torch.rand(1), expected)
    b = PSVAE((1, 32, 32), 2, 2, channels=(4, 4, 4, 4, 4), seed=3)
    c = PSVAE((1, 32, 32), 2, 2, channels=(4, 4, 4, 4, 4), seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.encoder[0].conv.weight, c.encoder[0].conv.weight)


def test_frames_smaller_than_the_kernel_are_refused():
    with pytest.raises(DataError, match="smaller than the 5x5 convolution kernel"):
        PSVAE((1, 4, 64), 2, 2)


def test_batch_norm_is_a_configuration_of_the_same_module():
    model = PSVAE((1, 32, 32), 2, 2, channels=(4, 4, 4, 4, 4), batch_norm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 5 + 4
    assert model(torch.rand(3, 1, 32, 32)).x_hat.shape == (3, 1, 32, 32)


def test_latents_stay_fp32_under_bf16_autocast():
    """z - mu must be sigma * eps to full precision for the loss's posterior densities."""
    torch.manual_seed(0)
    model = PSVAE((1, 32, 32), n_labels=2, n_unsup=2, channels=(4, 8), strides=(2, 2))
    with torch.no_grad():
        model.to_logvar.bias.fill_(-10.0)  # sigma ~ 0.007: bf16 would round z - mu to 0 or 2^-k steps
    x = torch.rand(8, 1, 32, 32)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.mu.dtype == out.logvar.dtype == out.z.dtype == torch.float32
    torch.manual_seed(1)
    eps = torch.randn_like(out.mu)
    torch.testing.assert_close(out.z - out.mu, torch.exp(0.5 * out.logvar) * eps, rtol=1e-4, atol=1e-7)


def test_the_label_map_starts_as_behavenets_uniform_draw_seeded_by_the_model_seed():
    n_labels = 2500  # many labels: the draw's distribution is measurable in one model
    bound = 1 / math.sqrt(n_labels)
    model = PSVAE((1, 32, 32), n_labels, 2, channels=(4, 4, 4, 4, 4), seed=5)
    for p in (model.label_scale, model.label_bias):
        v = p.detach()
        assert v.abs().max() <= bound and v.min() < -0.95 * bound and v.max() > 0.95 * bound
        assert abs(float(v.mean())) < 0.05 * bound
        assert float(v.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(-b, b)
        quarters = torch.histc(v, bins=4, min=-bound, max=bound) / n_labels
        assert torch.allclose(quarters, torch.full((4,), 0.25), atol=0.04)
    assert not torch.allclose(model.label_scale, model.label_bias)
    again = PSVAE((1, 32, 32), n_labels, 2, channels=(4, 4, 4, 4, 4), seed=5)
    other = PSVAE((1, 32, 32), n_labels, 2, channels=(4, 4, 4, 4, 4), seed=6)
    assert torch.equal(again.label_scale, model.label_scale) and torch.equal(again.label_bias, model.label_bias)
    assert not torch.equal(other.label_scale, model.label_scale)
    few = PSVAE((1, 32, 32), 4, 2, channels=(4, 4, 4, 4, 4), seed=0)
    assert few.label_scale.abs().max() <= 0.5 and few.label_bias.abs().max() <= 0.5  # 1/sqrt(4)


def test_the_layers_are_behavenets():
    model = PSVAE((1, 64, 64), n_labels=4, n_unsup=2, channels=(4, 8, 8, 8, 8))
    kinds = [
        type(m).__name__
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))
    ]
    assert kinds.count("Conv2d") == 5 and kinds.count("ConvTranspose2d") == 5 and kinds.count("Linear") == 3
    assert model.to_mean.in_features == model.to_logvar.in_features == 8 == model.from_latent.out_features
    # the decoder: linear (no nonlinearity), then transposed convolutions with LeakyReLU(0.05)
    # between them and a sigmoid after the last
    seen = []
    hooks = [
        layer.register_forward_hook(lambda m, i, o: seen.append((i[0].detach().clone(), o.detach().clone())))
        for layer in model.decoder
    ]
    z = 3 * torch.randn(6, model.n_latents)
    x_hat = model.decode(z)
    for h in hooks:
        h.remove()
    first_input = seen[0][0]
    assert torch.equal(first_input, model.from_latent(z).view(6, *model.code_shape))
    assert (first_input < 0).any()  # a LeakyReLU would have scaled these by 0.05
    for (_, out), (nxt, _) in zip(seen[:-1], seen[1:]):
        assert torch.allclose(nxt, F.leaky_relu(out, 0.05))
    assert torch.allclose(x_hat, torch.sigmoid(seen[-1][1]))
