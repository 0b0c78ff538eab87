"""P2 mnist_vae: the DeepOBS convolutional VAE on MNIST (§1 P2; model and loss in ``problems._vae``).

MNIST per §1.9: validation = the first 10 000 records of the training file, train = the other 50 000, /255;
``train_eval_size`` 10 000 as DeepOBS' ``mnist`` dataset class.

Data stream (DeepOBS ``datasets/mnist.py``): the 50 000 training records in file order through TF's
``shuffle(buffer_size=20000)`` (``shuffle: tf_buffer``, ``problems.base``): a sliding window, so the 156
``train_eval`` batches of 64 all come from the first 29 984 input positions and the 16 dropped records from the
tail; ``shuffle: uniform`` repairs it. The input order is fixed, so under ``data_order=repeat`` (§0.1b) every epoch
is the same 781 batches and ``train_eval`` is their head.
"""
from __future__ import annotations

from problems._vae import VAEProblem
from problems.base import PROBLEMS


@PROBLEMS.register
class MnistVae(VAEProblem):
    study_name = "mnist_vae"
    dataset = "mnist"
    train_eval_size = 10_000
