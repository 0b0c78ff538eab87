"""Floating-point precision and determinism of a run (§0: the study ran plain FP32 in TensorFlow 1).

``precision`` changes the maths, so it is part of the run spec (and the run_id):

* ``fp32`` (default): TF32 off everywhere. torch 2.13 runs cuDNN convolutions in TF32 by default
  (``torch.backends.cudnn.allow_tf32`` is True), which rounds the inputs of every convolution to a 10-bit mantissa;
  the study did not. On the CPU fp32 is the only arithmetic there is.
* ``tf32``: TF32 for CUDA matmuls and convolutions (faster on Ampere and later; no effect on the CPU).
* ``bf16``: forward passes under ``torch.autocast(dtype=bfloat16)`` (training and evaluation), parameters and
  optimizer state in fp32.

``deterministic`` asks torch for deterministic algorithms (cuDNN and cuBLAS), the order of floating-point
reductions fixed from run to run; it does not change *which* maths a run does, so it is recorded with the run but is
not part of its identity. On the CPU every kernel used here already is deterministic.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def run_numerics(precision: str, deterministic: bool) -> Iterator[None]:
    """Set the process-wide flags for one run and restore them afterwards."""
    if precision not in PRECISIONS:
        raise ValueError(f"invalid precision={precision!r}: must be one of {', '.join(PRECISIONS)}")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, det, torch.backends.cudnn.deterministic,
         torch.backends.cudnn.benchmark) = saved
        torch.use_deterministic_algorithms(det)


def forward_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context forward passes run in: bf16 autocast, or nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
