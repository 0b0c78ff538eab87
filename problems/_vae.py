"""P2 mnist_vae / P5 fmnist_vae: the DeepOBS convolutional VAE (§1 P2, TF ``_vae.py``), shared by both problems.

Follows TF, not the DeepOBS PyTorch port: the port adds a third dropout after the last transposed conv, which TF
does not have; and TF's 'same' transposed convs (k=4, s=1 crops (1, 2)) are reproduced exactly (``_layers``).
All kernels Glorot-uniform and biases zero (``tf.layers`` defaults). The reparameterisation noise ε is drawn on
every forward pass, at evaluation too (TF draws it inside the graph), so evaluated losses are stochastic.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from problems._image import ImageProblem
from problems._layers import Conv2d, ConvTranspose2d, init_layer, tf_flatten
from problems.base import Batch

N_LATENT = 8
KEEP_PROB = 0.8
IMAGE_PIXELS = 28 * 28
SSE_VARIANCE = 0.5
"""Σ(img − x)² is the negative log-likelihood of N(x; img, ½·I) up to a constant: the VAE's implicit likelihood."""


def lrelu(x: Tensor) -> Tensor:
    """DeepOBS ``lrelu``: max(x, 0.3·x)."""
    return torch.maximum(x, 0.3 * x)


class VAE(nn.Module):
    """Encoder 3 × (conv k4, lrelu, dropout) → (mean, ½·dense = log σ); decoder 2 dense → 3 transposed convs → dense."""

    def __init__(self) -> None:
        super().__init__()
        p = 1.0 - KEEP_PROB
        self.encoder_convs = nn.ModuleList([Conv2d(1, 64, 4, 2), Conv2d(64, 64, 4, 2), Conv2d(64, 64, 4, 1)])
        self.encoder_dropout = nn.Dropout(p)
        self.mean = nn.Linear(7 * 7 * 64, N_LATENT)
        self.std_dev = nn.Linear(7 * 7 * 64, N_LATENT)  # output × 0.5 is log σ (TF names it std_dev)
        self.latent_dense = nn.Linear(N_LATENT, 24)
        self.image_dense = nn.Linear(24, 24 * 2 + 1)
        self.decoder_convs = nn.ModuleList(
            [ConvTranspose2d(1, 64, 4, 2), ConvTranspose2d(64, 64, 4, 1), ConvTranspose2d(64, 64, 4, 1)])
        self.decoder_dropout = nn.Dropout(p)
        self.output = nn.Linear(14 * 14 * 64, IMAGE_PIXELS)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                init_layer(m, "glorot_uniform", bias=0.0)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std_dev) with std_dev = log σ, for images (B, 1, 28, 28) in [0, 1]."""
        for conv in self.encoder_convs:
            x = self.encoder_dropout(lrelu(conv(x)))
        flat = tf_flatten(x)
        return self.mean(flat), 0.5 * self.std_dev(flat)

    def decode(self, z: Tensor) -> Tensor:
        """Reconstruction (B, 784) in (0, 1), pixels in row-major order."""
        x = lrelu(self.image_dense(lrelu(self.latent_dense(z))))
        x = x.reshape(-1, 1, 7, 7)  # TF reshapes to (7, 7, 1): with one channel NHWC and NCHW orders coincide
        last = len(self.decoder_convs) - 1
        for i, conv in enumerate(self.decoder_convs):
            x = torch.relu(conv(x))
            if i < last:  # TF: no dropout after the third transposed conv
                x = self.decoder_dropout(x)
        return torch.sigmoid(self.output(tf_flatten(x)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction, mean, std_dev); z = mean + ε·exp(std_dev) with a fresh ε ~ N(0, I)."""
        mean, std_dev = self.encode(x)
        z = mean + torch.randn_like(mean) * torch.exp(std_dev)
        return self.decode(z), mean, std_dev


def vae_losses(img: Tensor, x: Tensor, mean: Tensor, std_dev: Tensor) -> Tensor:
    """Per-example TF loss: Σ_pixels (img − x)² − ½ Σ_latent (1 + 2·std_dev − mean² − exp(2·std_dev))."""
    sse = (img - x.reshape(x.shape[0], -1)).square().sum(dim=1)
    kl = -0.5 * (1.0 + 2.0 * std_dev - mean.square() - torch.exp(2.0 * std_dev)).sum(dim=1)
    return sse + kl


class VAEProblem(ImageProblem):
    """SSE + KL, batch mean; no accuracy (metric = test loss), no weight decay (TF ignores one with a warning)."""

    has_accuracy: ClassVar[bool] = False

    def build_model(self) -> nn.Module:
        return VAE()

    def compute(self, model: nn.Module, batch: Batch, training: bool) -> tuple[Tensor, Tensor | None]:
        x = batch[0]
        img, mean, std_dev = model(x)
        return vae_losses(img, x, mean, std_dev).mean(), None

    def sampled_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """SSE against targets drawn from the decoder's implicit Gaussian N(img, ½·I), batch mean; no KL.

        SSE = −log N(x; img, ½·I) + const, so drawing y ~ N(img, ½) makes ∇(Σ(img − y)²) a Gauss–Newton–Bartlett
        sample (its expected outer product w.r.t. img is 2·I, the SSE Hessian). The KL term is not a data
        likelihood and has no predictive distribution to sample, so it is left out.
        """
        img, _, _ = model(batch[0])
        y = img.detach() + math.sqrt(SSE_VARIANCE) * torch.randn_like(img)
        return (img - y).square().sum(dim=1).mean()
