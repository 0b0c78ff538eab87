"""valley: the Crowded-Valley optimizer benchmark harness (run loop, tuning, records, analysis, CLI)."""

PROTOCOL_VERSION = "2"
"""Bumped whenever a change alters what a run computes; it is part of every run_id (and of every study's identity).

1. The first release.
2. The study's TensorFlow behaviour by default where version 1 differed: Lookahead's sync replacing an inner step
   and its inner RAdam frozen at t = 1, ND-Adam without weight vectors (§2 notes); the DeepOBS data streams
   (buffer shuffle, re-drawn CIFAR-10/SVHN splits, CIFAR-100's byte shift, Tolstoi's split, §1.9, §8); the spec
   gained ``precision``. Version-1 records keep their meaning and are never reused for version-2 specs.
"""
