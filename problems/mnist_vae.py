"""P2 mnist_vae: the DeepOBS convolutional VAE on MNIST (§1 P2; model and loss in ``problems._vae``).

MNIST per §1.9: validation = the first 10 000 records of the training file, train = the other 50 000, /255;
``train_eval_size`` 10 000 as DeepOBS' ``mnist`` dataset class.
"""
from __future__ import annotations

from problems._vae import VAEProblem
from problems.base import PROBLEMS


@PROBLEMS.register
class MnistVae(VAEProblem):
    study_name = "mnist_vae"
    dataset = "mnist"
    train_eval_size = 10_000
