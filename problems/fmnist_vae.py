"""P5 fmnist_vae: the DeepOBS convolutional VAE on Fashion-MNIST (§1 P5; model and loss in ``problems._vae``).

Fashion-MNIST per §1.9 (same split as MNIST, /255); ``train_eval_size`` 10 000 as DeepOBS' ``fmnist`` class.
Data stream as ``mnist_vae`` (one file, TF's buffer shuffle; under ``repeat`` the same 781 batches every epoch).
"""
from __future__ import annotations

from problems._vae import VAEProblem
from problems.base import PROBLEMS


@PROBLEMS.register
class FmnistVae(VAEProblem):
    study_name = "fmnist_vae"
    dataset = "fmnist"
    train_eval_size = 10_000
