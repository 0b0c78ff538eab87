"""Tuning budgets (§4): one-shot cells and random-search cells on Optuna studies, resumable and shareable.

A *cell* is (problem + settings, optimizer, schedule, budget). A one-shot cell runs the optimizer's defaults with the
ten seeds; a tuned cell takes the best of the first ``n`` samples of its *study* — one Optuna study per (problem +
settings, optimizer, schedule), whose trials are the study's random-search samples in order, each trained with seed
42 — and re-runs the winner with seeds 43..51. Budgets of one study are nested prefixes of one sample stream, and
every run is content-addressed (``bench.execute``), so nothing is ever trained twice.

Modules: ``settings`` (the ``tuning:`` config and budgets), ``cell`` (identity, specs, selection, the cells table),
``study`` (Optuna storages, trials, workers, stale trials), ``runner`` (doing a cell), ``pool`` (worker processes),
``plan`` (dry runs and cost), ``progress`` (the live display), ``sweep`` (expanding a Hydra multirun), ``cli``.
"""
