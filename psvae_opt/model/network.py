"""The PS-VAE network (docs/design.md, "Model"): BehaveNet's convolutional VAE with a partitioned latent.

The encoder maps a (C, H, W) frame to latent means ``h`` and log-variances. A fixed random
orthogonal matrix ``[A; B]`` (a buffer, never trained) rotates the means: ``A h`` are the
supervised means ``z_s`` (one per label), ``B h`` the unsupervised means ``z_u``. A learned
diagonal affine map turns ``z_s`` into label predictions. The decoder mirrors the encoder
with transposed convolutions that exactly undo the "same" padding, so output size = input size.

Layer by layer this is BehaveNet's network, initialised as BehaveNet does (PyTorch's defaults,
and its label map's scale and bias drawn from U(-1/sqrt(L), 1/sqrt(L))): a linear layer with
no nonlinearity from the latents to the decoder's first feature map, LeakyReLU(0.05) after
every hidden (transposed) convolution, a sigmoid after the last. Two choices differ: an odd
total "same" padding puts its extra row before rather than after (no padded copy), and the
orthogonal matrix is a QR draw of the same Haar distribution as BehaveNet's scipy draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from psvae_opt.errors import DataError

LEAKY_SLOPE = 0.05


class ModelOutput(NamedTuple):
    """What :meth:`PSVAE.forward` returns for a batch of B frames, K = L + n_unsup latents.

    Attributes:
        x_hat: (B, C, H, W) frames decoded from ``z``, in [0, 1].
        y_hat: (B, L) labels predicted from the supervised means.
        mu: (B, K) latent means, supervised dims first: ``[z_s | z_u]``.
        logvar: (B, K) latent log-variances (not rotated).
        z: (B, K) the latents the decoder saw: a sample, or ``mu`` when not sampling.
    """

    x_hat: Tensor
    y_hat: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """ "Same" padding along one axis: the output size is ceil(size / stride).

    Returns:
        (output size, padding before, padding after). An odd total puts the extra row
        before, which is PyTorch's symmetric convolution padding with the unused last row
        dropped (TensorFlow puts it after; the windows then sit one pixel apart).
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = (total + 1) // 2
    return out, before, total - before


def check_frame_shape(frame_shape: Sequence[int], kernel_size: int) -> None:
    """Refuse frames the network cannot take, naming the fix."""
    if len(frame_shape) != 3 or min(frame_shape) < 1:
        raise DataError(f"frame shape {tuple(frame_shape)} is not (C, H, W)")
    c, h, w = frame_shape
    if min(h, w) < kernel_size:
        raise DataError(
            f"frames of {h}x{w} pixels are smaller than the {kernel_size}x{kernel_size} "
            "convolution kernel; import the video at a larger --size (64 or 128)"
        )


def _patch_conv(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """A convolution whose kernel equals its stride, as one matrix product over patches.

    The windows do not overlap, so (B, C, h k, w k) -> (B h w, C k k) patches times the
    (C_out, C k k) weight is the same convolution; CPU convolution libraries run this shape
    (the last encoder layer: a few large windows) an order of magnitude slower than a GEMM.
    """
    b, c, hh, ww = x.shape
    out, _, k, _ = weight.shape
    h, w = hh // k, ww // k
    patches = x[:, :, : h * k, : w * k].reshape(b, c, h, k, w, k).permute(0, 2, 4, 1, 3, 5)
    y = F.linear(patches.reshape(b * h * w, c * k * k), weight.reshape(out, -1), bias)
    return y.reshape(b, h, w, out).permute(0, 3, 1, 2)


def _patch_conv_transpose(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """The transposed convolution of :func:`_patch_conv`: (B, C_in, h, w) -> (B, C_out, h k, w k)."""
    b, c, h, w = x.shape
    _, out, k, _ = weight.shape
    # outputs ordered (row, column, channel): a channels-last weight (the trainer's default)
    # is then a view, and the frames come out channels-last
    y = x.permute(0, 2, 3, 1).reshape(b * h * w, c) @ weight.permute(0, 2, 3, 1).reshape(c, k * k * out)
    y = y.reshape(b, h, w, k, k, out).transpose(2, 3).reshape(b, h * k, w * k, out).permute(0, 3, 1, 2)
    return y + bias.view(1, out, 1, 1)


class _EncoderLayer(nn.Module):
    """Convolution with "same" padding.

    Overlapping windows use the convolution's own symmetric padding (no copy); a kernel
    equal to its stride pads explicitly and runs as one matrix product (:func:`_patch_conv`).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, size_in, pads, batch_norm: bool):
        super().__init__()
        self.patch = kernel == stride
        # Symmetric padding by the larger half gives the "same" size unless stride is 1 and
        # the total padding odd; then (and for patches) the input is padded explicitly.
        fits = all(
            (n + 2 * p0 - kernel) // stride == (n + p0 + p1 - kernel) // stride for n, (p0, p1) in zip(size_in, pads)
        )
        explicit = self.patch or not fits
        (h0, h1), (w0, w1) = pads
        self.pad = (w0, w1, h0, h1) if explicit else None
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=0 if explicit else (h0, w0))
        self.norm = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        y = _patch_conv(x, self.conv.weight, self.conv.bias) if self.patch else self.conv(x)
        return F.leaky_relu(self.norm(y), LEAKY_SLOPE, inplace=True)


class _DecoderLayer(nn.Module):
    """The transposed convolution (adjoint) of one encoder layer; output size = its input size.

    Overlapping windows: the transposed convolution with the same padding plus an output
    padding of 0 or 1 is the exact adjoint. A kernel equal to its stride: one matrix product
    (:func:`_patch_conv_transpose`) at full size, then the padding is cropped off.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, size_in, size_out, pads):
        super().__init__()
        before = [p0 for p0, _ in pads]
        natural = [(n - 1) * stride + kernel - 2 * p for n, p in zip(size_in, before)]
        extra = [so - n for so, n in zip(size_out, natural)]
        self.patch = kernel == stride
        if self.patch or not all(0 <= e < stride for e in extra):
            self.conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride)
            self.crop = [(p0, p0 + so) for p0, so in zip(before, size_out)]
        else:
            self.conv = nn.ConvTranspose2d(
                c_in, c_out, kernel, stride, padding=tuple(before), output_padding=tuple(extra)
            )
            self.crop = None

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        if self.crop is None:
            # the bias is added apart: oneDNN's weight gradient of a transposed convolution
            # with a bias is 20-70% slower than without it plus a sum of the output gradient
            y = F.conv_transpose2d(x, conv.weight, None, conv.stride, conv.padding, conv.output_padding)
            return y.add_(conv.bias.view(1, -1, 1, 1).to(y.dtype))
        y = _patch_conv_transpose(x, conv.weight, conv.bias) if self.patch else conv(x)
        (h0, h1), (w0, w1) = self.crop
        short_h, short_w = max(h1 - y.shape[2], 0), max(w1 - y.shape[3], 0)
        if short_h or short_w:  # kernel < stride: rows no window reached are zero
            y = F.pad(y, (0, short_w, 0, short_h))
        return y[:, :, h0:h1, w0:w1]


def random_rotation(n: int, seed: int) -> Tensor:
    """A random n x n orthogonal matrix (Haar measure), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q = q * np.sign(np.diag(r))  # fix the signs so the draw is uniform
    return torch.as_tensor(q, dtype=torch.float32)


class PSVAE(nn.Module):
    """Partitioned-subspace VAE.

    Args:
        frame_shape: (C, H, W) of the input frames.
        n_labels: L, the number of pose labels (= supervised latents).
        n_unsup: number of unsupervised latents.
        channels: encoder channels per layer (decoder mirrors them).
        kernel_size: square kernel of every layer.
        strides: stride of every layer.
        batch_norm: batch normalisation after each hidden convolution.
        seed: seed of the initial weights and of the orthogonal matrix.
    """

    def __init__(
        self,
        frame_shape: Sequence[int],
        n_labels: int,
        n_unsup: int,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        kernel_size: int = 5,
        strides: Sequence[int] = (2, 2, 2, 2, 5),
        batch_norm: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_frame_shape(frame_shape, kernel_size)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.n_labels, self.n_unsup = int(n_labels), int(n_unsup)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._build(list(channels), kernel_size, list(strides), batch_norm)
        self.register_buffer("rotation", random_rotation(self.n_latents, seed))

    def _build(self, channels: list[int], kernel: int, strides: list[int], batch_norm: bool) -> None:
        c, h, w = self.frame_shape
        sizes, pads, enc = [(h, w)], [], []
        for c_in, c_out, s in zip([c] + channels[:-1], channels, strides):
            (h2, *ph), (w2, *pw) = same_padding(h, kernel, s), same_padding(w, kernel, s)
            pads.append((tuple(ph), tuple(pw)))
            enc.append(_EncoderLayer(c_in, c_out, kernel, s, (h, w), pads[-1], batch_norm))
            h, w = h2, w2
            sizes.append((h, w))
        self.encoder = nn.Sequential(*enc)
        self.code_shape = (channels[-1], h, w)
        n_feat = channels[-1] * h * w
        self.to_mean = nn.Linear(n_feat, self.n_latents)
        self.to_logvar = nn.Linear(n_feat, self.n_latents)
        self.from_latent = nn.Linear(self.n_latents, n_feat)
        dec, norms = [], []
        outs = [c] + channels[:-1]
        for i in reversed(range(len(channels))):
            dec.append(_DecoderLayer(channels[i], outs[i], kernel, strides[i], sizes[i + 1], sizes[i], pads[i]))
            norms.append(nn.BatchNorm2d(outs[i]) if batch_norm and i > 0 else nn.Identity())
        self.decoder = nn.ModuleList(dec)
        self.decoder_norms = nn.ModuleList(norms)
        # BehaveNet's label map (its DiagLinear): scale and bias both drawn from U(-1/sqrt(L), 1/sqrt(L)).
        # A start at scale 1, bias 0 left both unsupervised latents of the demo model unused at
        # alpha 1000 (README, "Science notes").
        bound = 1.0 / math.sqrt(max(self.n_labels, 1))
        self.label_scale = nn.Parameter(torch.empty(self.n_labels).uniform_(-bound, bound))
        self.label_bias = nn.Parameter(torch.empty(self.n_labels).uniform_(-bound, bound))

    @property
    def n_latents(self) -> int:
        return self.n_labels + self.n_unsup

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) frames in [0, 1] -> rotated means (B, K) and log-variances (B, K)."""
        feat = self.encoder(x).flatten(1)
        h = self.to_mean(feat)
        return h @ self.rotation.T, self.to_logvar(feat)

    def decode(self, z: Tensor) -> Tensor:
        """(B, K) latents -> (B, C, H, W) frames in [0, 1]."""
        # no nonlinearity after the first linear layer, as in BehaveNet's decoder
        x = self.from_latent(z).view(-1, *self.code_shape)
        last = len(self.decoder) - 1
        for i, (layer, norm) in enumerate(zip(self.decoder, self.decoder_norms)):
            x = layer(x)
            x = torch.sigmoid(x) if i == last else F.leaky_relu(norm(x), LEAKY_SLOPE, inplace=True)
        return x

    def predict_labels(self, z_s: Tensor) -> Tensor:
        """(B, L) supervised latents -> (B, L) labels: y_k = d_k z_k + b_k."""
        return z_s * self.label_scale + self.label_bias

    def forward(self, x: Tensor, sample: bool = True) -> ModelOutput:
        """Encode, sample z = mu + exp(logvar / 2) * eps (or take z = mu), decode.

        The latents stay fp32 under bf16 autocast: z - mu must be exactly sigma * eps for the
        posterior densities of the loss (a bf16 z shifts them when sigma is small).
        """
        mu, logvar = self.encode(x)
        mu, logvar = mu.float(), logvar.float()
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if sample else mu
        y_hat = self.predict_labels(mu[:, : self.n_labels])
        return ModelOutput(self.decode(z), y_hat, mu, logvar, z)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
