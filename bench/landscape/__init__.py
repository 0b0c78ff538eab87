"""Loss landscapes and trajectories of recorded runs (issue #14, protocol §9): why optimizers land where they land.

* ``saver``       — the ``save_params=none|final|trajectory`` run option: a parameter-saver observer writing
                    ``results_dir/params/<run_id>.pt`` (referenced from the run's ``params_file``), and re-training
                    a recorded run with a saver when its parameters were not kept;
* ``surface``     — a run's loss surface: its problem, model and fixed evaluation rows (train-eval = the head of the
                    run's training stream, test), losses at many parameter vectors per pass (``torch.func.vmap``
                    where it pays, else a loop), gradients and Hessian-vector products;
* ``directions``  — random directions with Li et al.'s filter normalisation;
* ``hessian``     — power iteration and Lanczos on Hessian-vector products, the full Hessian of tiny models;
* ``analyses``    — 1-D / 2-D slices, the trajectory's PCA plane, sharpness over training, linear interpolation;
* ``store``       — the results as Parquet under ``results_dir/landscape/`` (pyarrow only);
* ``figures``     — PNG + SVG figures drawn from those tables (matplotlib only);
* ``cli``         — ``valley-landscape``.

``store`` and ``figures`` never import torch, so ``valley-report`` draws the landscape section from Parquet alone.
This package's ``__init__`` imports nothing.
"""
