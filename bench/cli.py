"""``valley``: the Hydra app. Composes problem × optimizer × schedule (× budget) and runs it.

Bad input never reaches Hydra's multi-line errors or a traceback: unknown group options and unknown keys are checked
against ``conf/`` before Hydra starts, and spec validation errors are printed as one line (exit code 2).

Before Hydra runs, ``main`` expands the command line into its jobs exactly as Hydra's basic sweeper will
(``bench.tuning.sweep``): a dry run (``dry_run=true``, ``valley-plan``) prints the plan of all of them and exits, and a
sweep with budgets gets one live progress display across all its cells (the basic launcher runs jobs in this
process, one after another). Commands with other Hydra flags (``--help``, ``--cfg``, ...) go to Hydra untouched.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from bench.tuning import sweep

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("problem", "optimizer", "schedule", "budget", "experiment", "logger", "launcher")
KEYED_GROUPS = ("problem", "optimizer", "schedule", "logger", "launcher")  # group.<key>=… checked against the YAML
TOP_LEVEL = ("seed", "data_order", "results_dir", "data_dir", "device", "force", "progress", "dry_run", "engine",
             "precision", "deterministic", "threads", "save_params", "save_params_runs")


def fail(message: str, code: int = 2) -> None:
    """One line on stderr (database passwords masked), then exit."""
    from bench.secrets import redact

    print(f"valley: error: {redact(message)}", file=sys.stderr)
    sys.exit(code)


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAMLs, and the plugins loaded in this process for it."""
    from bench import plugins

    found = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    if group in plugins.KINDS:
        found |= {p.stem for p in (plugins.conf_dir() / group).glob("*.yaml")}
    return sorted(found)


def option_yaml(group: str, option: str) -> Path:
    """The YAML of a group's option: the project's, else a plugin's (loaded in this process)."""
    path = CONF_DIR / group / f"{option}.yaml"
    if path.exists():
        return path
    from bench import plugins

    return plugins.conf_dir() / group / f"{option}.yaml"


def load_plugins(argv: list[str]) -> list[str]:
    """Load the plugins the command line names and return it with each ``file:PATH`` replaced by the plugin's
    name: ``optimizer=file:my_opt.py`` (also inside a sweep: ``optimizer=adam,file:my_opt.py``), or the name of
    an installed entry-point plugin. Raises ``PluginError`` (one line)."""
    from bench import plugins

    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        if not sep or group not in plugins.KINDS or arg.startswith("-"):
            out.append(arg)
            continue
        names = []
        for raw in _sweep_values(value):
            if raw.startswith(plugins.PREFIX):
                names.append(plugins.load_file(group, raw).name)
            else:
                if not (CONF_DIR / group / f"{raw}.yaml").exists():
                    plugins.load_entry_point(group, raw)  # an installed plugin, if one has this name
                names.append(raw)
        out.append(f"{key}={','.join(names)}" if len(names) != 1 or "," in value else f"{key}={names[0]}")
    return out


_sweep_values = sweep.sweep_values


def precheck(argv: list[str]) -> str | None:
    """Return a one-line error for unknown group options or keys in the command line, or None."""
    from omegaconf import OmegaConf

    chosen: dict[str, list[str]] = {}
    keyed: list[tuple[str, str, str]] = []
    value_of: dict[str, str] = {}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        bare = key.lstrip("+~")
        if bare.startswith("hydra"):
            continue
        if bare in GROUPS:
            names = _sweep_values(value)
            valid = group_options(bare)
            for name in names:
                if name not in valid and name != "null":
                    return f"unknown {bare} '{name}'; valid: {', '.join(valid)}"
            chosen[bare] = names
        elif "." in bare and bare.split(".", 1)[0] in KEYED_GROUPS:
            group, sub = bare.split(".", 1)
            keyed.append((group, sub, key))
            value_of[key] = value
        elif bare.split(".", 1)[0] in ("tuning", "budget") and "." in bare:
            from bench.tuning.settings import check_override

            error = check_override(bare, value)
            if error:
                return error
        elif bare.split(".", 1)[0] == "checkpoint":
            error = _check_checkpoint(bare, value)
            if error:
                return error
        elif bare in TOP_LEVEL:
            error = _check_top_level(bare, value)
            if error:
                return error
        elif bare not in TOP_LEVEL and not key.startswith("+"):
            return (f"unknown setting '{bare}'; valid: {', '.join(TOP_LEVEL)} or "
                    f"{', '.join(KEYED_GROUPS)}.<key>, tuning.<key>, checkpoint.<key>, budget.samples")
    if "experiment" in chosen:
        return None  # presets may change the defaults; Hydra and spec validation check the rest
    entries = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"))["defaults"]
    defaults = {g: o for d in entries if isinstance(d, dict) for g, o in d.items()}
    for group, sub, key in keyed:
        if key.startswith("+"):
            continue  # explicitly added keys are checked by spec validation
        top = sub.split(".", 1)[0]
        for option in chosen.get(group, [defaults.get(group)]):
            cfg = OmegaConf.load(option_yaml(group, option))
            if top not in cfg:
                valid = ", ".join(k for k in cfg if k != "name")
                what = "hyperparameter" if group == "optimizer" else "setting"
                if not valid:
                    return f"unknown {what} '{top}': {group} {option} has no settings"
                return f"unknown {what} '{top}' for {group} {option}; valid: {valid}"
            if group == "logger" and option == "wandb":
                from bench.loggers.wandb import check_override

                error = check_override(key, value_of[key])
                if error:
                    return error
    return None


def _parse(raw: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _check_checkpoint(key: str, value: str) -> str | None:
    from bench.checkpoint import CheckpointError, policy_from_config

    sub = key.split(".", 1)[1]
    for raw in _sweep_values(value):
        try:
            policy_from_config({sub: _parse(raw)})
        except CheckpointError as err:
            return str(err)
    return None


def _check_top_level(key: str, value: str) -> str | None:
    """One line for a bad value of the top-level keys whose valid values are known before composing."""
    from bench.engine import ENGINES
    from bench.precision import PRECISIONS

    if "(" in value:  # a sweep function (range(42,52), interval(...)): Hydra expands it, the spec checks each value
        return None
    for raw in _sweep_values(value) or [""]:
        v = _parse(raw) if raw else ""
        if key in ("threads", "data_dir") and raw in ("null", "~"):
            continue
        if key == "engine" and v not in ENGINES:
            return f"unknown engine {raw!r}; valid: {', '.join(ENGINES)}"
        if key == "precision" and v not in PRECISIONS:
            return f"invalid precision={raw!r}: must be one of {', '.join(PRECISIONS)}"
        if key == "deterministic" and not isinstance(v, bool):
            return f"invalid deterministic={raw!r}: must be true or false"
        if key in ("save_params", "save_params_runs"):
            from bench.landscape.saver import MODES, RUN_CHOICES

            valid = MODES if key == "save_params" else RUN_CHOICES
            if v not in valid:
                return f"invalid {key}={raw!r}: must be one of {', '.join(valid)}"
        if key == "threads" and v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            return f"invalid threads={raw!r}: must be an integer >= 1 (or null: torch's default)"
        if key in ("force", "progress", "dry_run") and not isinstance(v, bool):
            return f"invalid {key}={raw!r}: must be true or false"
        if key == "seed" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            return f"invalid seed={raw!r}: must be an integer >= 0"
        if key == "data_order" and v not in ("repeat", "fresh"):
            return f"invalid data_order={raw!r}: must be one of repeat, fresh"
        if key == "results_dir" and (not isinstance(v, str) or not v.strip()):
            return f"invalid results_dir={raw!r}: must be a directory path"
        if key == "data_dir" and v is not None and (not isinstance(v, str) or not v.strip()):
            return f"invalid data_dir={raw!r}: must be a directory path, or null ($VALLEY_DATA or ~/.cache/valley)"
        if key == "device" and (not isinstance(v, str) or not v.strip()):
            return f"invalid device={raw!r}: must be auto, cpu, cuda or cuda:N"
    return None


def check_jobs(jobs: list[list[str]]) -> str | None:
    """Group options of the expanded jobs (a preset's sweep values are not on the command line)."""
    seen: set[tuple[str, str]] = set()
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            group = key.lstrip("+~")
            if group in GROUPS and (group, value) not in seen:
                seen.add((group, value))
                if value != "null" and value not in group_options(group):
                    return f"unknown {group} '{value}'; valid: {', '.join(group_options(group))}"
    return None


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (a cluster's kill, ``kill``) as SystemExit: the run loop tells its observers (a logger flushes),
    and the last checkpoint and every record stay as they are; the same command resumes."""
    raise SystemExit(128 + signum)


def main() -> None:
    import signal

    from bench import plugins
    from bench.secrets import scrub_argv

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)
    try:  # a database password never reaches Hydra (its .hydra files, its error lines): it moves to the environment
        sys.argv[1:] = scrub_argv(sys.argv[1:])
    except ValueError as err:
        fail(str(err))
    try:
        argv = load_plugins(sys.argv[1:])
    except plugins.PluginError as err:
        fail(str(err))
        return
    error = precheck(argv)
    if error:
        fail(error)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    split = sweep.split_argv(argv)
    if split is None:
        _hydra_entry()
        return
    multirun, overrides = split
    try:
        jobs = sweep.expand(overrides, multirun)
        error = check_jobs(jobs)
        if error:
            fail(error)
        cfgs = sweep.compose_jobs(jobs)
    except sweep.SweepError as err:
        fail(str(err))
        return
    from bench.tuning import cli as tuning_cli

    if any(c.get("dry_run") for c in cfgs):
        tuning_cli.print_plan(tuning_cli.plan_of_configs(cfgs))
        return
    from bench.launch import LaunchError, launch
    from problems.datasets.errors import DataError

    try:
        code = launch(cfgs, multirun=multirun)
    except LaunchError as err:
        fail(str(err))
        return
    except DataError as err:  # missing / corrupt data: the message names the file, its URL and where to put it
        fail(str(err).splitlines()[0], code=1)
        return
    if code:
        sys.exit(code)


def plan_main() -> None:
    """``valley-plan``: the same command line as ``valley -m``, as a dry run."""
    sys.argv = [sys.argv[0], "-m", "dry_run=true", *[a for a in sys.argv[1:] if a not in ("-m", "--multirun")]]
    main()


def _hydra_entry() -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def app(cfg: DictConfig) -> None:
        run_from_config(OmegaConf.to_container(cfg, resolve=True))

    app()


def run_from_config(cfg: dict[str, Any]) -> None:
    """One Hydra job: a single run, or (with ``budget``) a tuning cell."""
    from bench.train import resolve_device
    from problems.datasets.errors import DataError

    try:
        resolve_device(str(cfg.get("device", "auto")))
    except ValueError as err:
        fail(str(err))
    apply_threads(cfg)
    from bench.execute import env_from_config

    try:
        env_from_config(cfg)
    except ValueError as err:
        fail(" ".join(str(err).split()))
    try:
        _run_job(cfg)
    except DataError as err:  # missing / corrupt data: the message names the file, its URL and where to put it
        fail(str(err).splitlines()[0], code=1)


def apply_threads(cfg: dict[str, Any]) -> None:
    """``threads=N``: torch's intra-op threads for this process (on a shared CPU, one per process is much faster
    for the small problems than torch's default of one per core)."""
    threads = cfg.get("threads")
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))


def _run_job(cfg: dict[str, Any]) -> None:
    from bench.spec import SpecError, spec_from_config

    if cfg.get("budget"):
        from bench.tuning.cli import run_cell_job

        run_cell_job(cfg)
        return
    try:
        spec = spec_from_config(cfg)
    except SpecError as err:
        fail(str(err))
        return
    if cfg.get("dry_run"):  # reached only when Hydra was called with its own flags; main() plans the rest
        from bench.tuning.cli import plan_of_configs, print_plan

        print_plan(plan_of_configs([cfg]))
        return
    from bench.console import run_single

    status = run_single(spec, cfg)
    if status == "failed":
        sys.exit(1)


if __name__ == "__main__":
    main()
