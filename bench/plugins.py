"""Optimizers, problems and schedules from outside this repository: one Python file, or an installed package.

``valley optimizer=file:path/to/my_opt.py`` loads the file; an installed distribution that declares an entry point
in the group ``valley.optimizers`` (``valley.problems``, ``valley.schedules``) is found by its entry-point name
(``valley optimizer=my_opt``). A plugin declares what a built-in declares — for an optimizer: ``hyperparameters``
(types, valid ranges, the study's search distributions in sampling order), ``defaults`` (a value for every
hyperparameter; or a YAML of the same stem beside the file), ``build`` (any ``torch.optim.Optimizer``, closure-based
ones too with ``needs_closure = True``) — and is then checked, composed, validated, trained, tuned, recorded and
reported exactly like a built-in.

Identity: a plugin's runs carry ``{"name", "sha256"}`` of its source in their spec (``RunSpec.plugins``), so a run
of an edited plugin is a new run and never reuses an old record; where the plugin lives (its path, its entry point)
travels with the spec so that worker processes and cluster tasks can load it (``ensure``), but is not part of the
run_id (moving the file changes nothing). A process that finds the source changed since the spec was made refuses
with one line instead of training other code under the old identity.

Bad plugins get one line naming the file and what is wrong (``PluginError``): a file that does not exist or does
not import, no plugin class or more than one, a name that is already a built-in, a search distribution the study's
sampler does not know, hyperparameters without defaults.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

KINDS = ("optimizer", "problem", "schedule")
ENTRY_POINT_GROUPS = {"optimizer": "valley.optimizers", "problem": "valley.problems", "schedule": "valley.schedules"}
PREFIX = "file:"


class PluginError(ValueError):
    """A plugin that cannot be used; the message is the one line a user sees."""


@dataclass(frozen=True)
class PluginRef:
    """Where a loaded plugin came from and what its source was."""

    kind: str
    name: str
    sha256: str
    path: str | None = None  # a file plugin
    entry_point: str | None = None  # an installed plugin: "module:attr"

    def as_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "name": self.name, "sha256": self.sha256}
        if self.path is not None:
            out["path"] = self.path
        if self.entry_point is not None:
            out["entry_point"] = self.entry_point
        return out

    def identity(self) -> dict[str, str]:
        """What enters the run_id: the name and the source hash, not the location."""
        return {"name": self.name, "sha256": self.sha256}


def _registry(kind: str) -> Any:
    if kind == "optimizer":
        from optimizers import OPTIMIZERS
        return OPTIMIZERS
    if kind == "problem":
        from problems import PROBLEMS
        return PROBLEMS
    from bench.schedules import SCHEDULES
    return SCHEDULES


def _base_class(kind: str) -> type:
    if kind == "optimizer":
        from optimizers.base import OptimizerSpec
        return OptimizerSpec
    if kind == "problem":
        from problems.base import Problem
        return Problem
    from bench.schedules.base import Schedule
    return Schedule


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_LOADED: dict[tuple[str, str], PluginRef] = {}  # (kind, name) -> where it came from, in this process


def loaded(kind: str, name: str) -> PluginRef | None:
    return _LOADED.get((kind, name))


def refs_of(names: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The plugin refs (as dicts) of the given ``kind -> name`` choices that are plugins."""
    return {k: ref.as_dict() for k, n in names.items() if (ref := _LOADED.get((k, n))) is not None}


# ------------------------------------------------------------------------------------------------ loading
def load_file(kind: str, spec: str) -> PluginRef:
    """Load ``file:PATH`` (or a bare PATH) as a ``kind`` plugin; register it; return its ref."""
    raw = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    path = Path(raw).expanduser()
    if not path.is_file():
        raise PluginError(f"{kind} plugin {raw}: no such file")
    path = path.resolve()
    sha = _sha256(path)
    for (k, _), ref in _LOADED.items():
        if k == kind and ref.path == str(path) and ref.sha256 == sha:
            return ref
    module_name = f"valley_plugin_{kind}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"{kind} plugin {raw}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - the author's error, in one line
        sys.modules.pop(module_name, None)
        where = _error_line(err, path)
        raise PluginError(f"{kind} plugin {raw} does not import: {type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]}{where}") from None
    base = _base_class(kind)
    found = [obj for obj in vars(module).values()
             if inspect.isclass(obj) and issubclass(obj, base) and obj is not base
             and obj.__module__ == module_name and not obj.__name__.startswith("_")]
    if not found:
        raise PluginError(f"{kind} plugin {raw} defines no {base.__name__} subclass")
    if len(found) > 1:
        raise PluginError(f"{kind} plugin {raw} defines {len(found)} {base.__name__} subclasses "
                          f"({', '.join(c.__name__ for c in found)}); a plugin file holds exactly one")
    cls = found[0]
    name = getattr(cls, "plugin_name", None) or path.stem
    ref = PluginRef(kind, name, sha, path=str(path))
    _register(kind, name, cls, ref, where=raw, sibling=path.with_suffix(".yaml"))
    return ref


def _error_line(err: BaseException, path: Path) -> str:
    if isinstance(err, SyntaxError) and err.lineno:
        return f" (line {err.lineno})"
    tb = err.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def entry_points(kind: str) -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[kind])}


def load_entry_point(kind: str, name: str) -> PluginRef | None:
    """Load the installed plugin ``name`` of ``kind`` if a distribution declares one; None if none does."""
    if (kind, name) in _LOADED:
        return _LOADED[(kind, name)]
    ep = entry_points(kind).get(name)
    if ep is None:
        return None
    try:
        cls = ep.load()
    except Exception as err:  # noqa: BLE001
        raise PluginError(f"{kind} plugin {name} (entry point {ep.value}) does not import: {type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]}") from None
    base = _base_class(kind)
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise PluginError(f"{kind} plugin {name}: entry point {ep.value} is not a {base.__name__} subclass")
    source = inspect.getsourcefile(cls)
    sha = _sha256(Path(source)) if source else hashlib.sha256(ep.value.encode()).hexdigest()
    ref = PluginRef(kind, name, sha, entry_point=ep.value)
    _register(kind, name, cls, ref, where=f"{name} (entry point {ep.value})", sibling=None)
    return ref


def ensure(refs: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Make the plugins a spec or config names available in this process (workers, cluster tasks).

    Refuses with one line when a plugin's source is no longer what the spec was made from.
    """
    for kind, ref in (refs or {}).items():
        have = _LOADED.get((kind, ref["name"]))
        if have is None:
            if ref.get("path"):
                have = load_file(kind, ref["path"])
            elif ref.get("entry_point"):
                have = load_entry_point(kind, ref["name"])
            if have is None:
                raise PluginError(f"{kind} plugin {ref['name']} is not available in this process")
        if have.sha256 != ref["sha256"]:
            raise PluginError(f"{kind} plugin {ref['name']} changed since this run was defined (source "
                              f"{have.sha256[:12]}, expected {ref['sha256'][:12]}); re-submit the sweep")


# ------------------------------------------------------------------------------------------------ checks
def _register(kind: str, name: str, cls: type, ref: PluginRef, *, where: str, sibling: Path | None) -> None:
    registry = _registry(kind)
    if name in registry.names() and (kind, name) not in _LOADED:
        raise PluginError(f"{kind} plugin {where}: the name {name!r} is a built-in {kind}; "
                          f"set plugin_name = '...' in the class to choose another")
    other = _LOADED.get((kind, name))
    if other is not None and other.sha256 != ref.sha256:
        raise PluginError(f"{kind} plugin {where}: the name {name!r} is taken by {other.path or other.entry_point}")
    defaults = _defaults(kind, cls, where, sibling)
    _check(kind, cls, defaults, where)
    cls.plugin_defaults = defaults
    registry.register_plugin(cls, name)
    _LOADED[(kind, name)] = ref
    _write_config(kind, name, defaults)


def _defaults(kind: str, cls: type, where: str, sibling: Path | None) -> dict[str, Any]:
    defaults = dict(getattr(cls, "defaults", {}) or {})
    if kind == "schedule":  # a law declares its defaults with its parameters
        defaults = {**{k: p.default for k, p in getattr(cls, "parameters", {}).items()}, **defaults}
    if sibling is not None and sibling.is_file():
        try:
            from_yaml = yaml.safe_load(sibling.read_text()) or {}
        except yaml.YAMLError as err:
            raise PluginError(f"{kind} plugin {where}: {sibling.name} is not valid YAML "
                              f"({' '.join(str(err).split())[:120]})") from None
        if not isinstance(from_yaml, dict):
            raise PluginError(f"{kind} plugin {where}: {sibling.name} must be a mapping of defaults")
        from_yaml.pop("name", None)
        defaults.update(from_yaml)
    return defaults


def _check(kind: str, cls: type, defaults: dict[str, Any], where: str) -> None:
    if kind == "optimizer":
        from optimizers.base import Hyper, HyperparameterError, LogUniform, RandInt

        hps = getattr(cls, "hyperparameters", None)
        if not isinstance(hps, dict) or not hps:
            raise PluginError(f"optimizer plugin {where}: declare hyperparameters = {{name: Hyper(...)}}")
        for key, hyper in hps.items():
            if not isinstance(hyper, Hyper):
                raise PluginError(f"optimizer plugin {where}: hyperparameter {key!r} is not a Hyper(...)")
            if hyper.search is not None and not isinstance(hyper.search, (LogUniform, RandInt)):
                raise PluginError(f"optimizer plugin {where}: hyperparameter {key!r} has search distribution "
                                  f"{type(hyper.search).__name__}; the study's sampler knows LogUniform, RandInt")
        missing = [k for k in hps if k not in defaults]
        if missing:
            raise PluginError(f"optimizer plugin {where}: no default for {', '.join(missing)} "
                              "(set defaults = {...} in the class, or a YAML beside the file)")
        unknown = [k for k in defaults if k not in hps]
        if unknown:
            raise PluginError(f"optimizer plugin {where}: default for unknown hyperparameter {unknown[0]!r}; "
                              f"declared: {', '.join(hps)}")
        if getattr(cls.build, "__func__", None) is getattr(_base_class("optimizer").build, "__func__", None):
            raise PluginError(f"optimizer plugin {where}: define build(cls, params, hp) returning a "
                              "torch.optim.Optimizer")
        try:
            cls.validate(defaults)
        except HyperparameterError as err:
            raise PluginError(f"optimizer plugin {where}: its defaults are invalid: {err}") from None
    elif kind == "problem":
        for key in ("batch_size", "num_epochs"):
            if key not in defaults:
                raise PluginError(f"problem plugin {where}: no default for {key} "
                                  "(set defaults = {...} in the class, or a YAML beside the file)")
        for method in ("load_data", "build_model", "compute"):
            if getattr(cls, method) is getattr(_base_class("problem"), method):
                raise PluginError(f"problem plugin {where}: define {method}()")
    else:
        try:
            cls.law_parameters({k: v for k, v in defaults.items() if k != "granularity"})
        except ValueError as err:
            raise PluginError(f"schedule plugin {where}: {err}") from None
        if getattr(cls, "law") is getattr(_base_class("schedule"), "law"):
            raise PluginError(f"schedule plugin {where}: define law(self, t)")


# ------------------------------------------------------------------------------------------------ configs
_CONF_DIR: Path | None = None


def conf_dir() -> Path:
    """This process's config dir of loaded plugins (``<group>/<name>.yaml``), put on Hydra's search path."""
    global _CONF_DIR
    if _CONF_DIR is None:
        _CONF_DIR = Path(tempfile.mkdtemp(prefix="valley-plugin-conf-"))
        import atexit
        import shutil

        atexit.register(shutil.rmtree, _CONF_DIR, True)
    return _CONF_DIR


def _write_config(kind: str, name: str, defaults: dict[str, Any]) -> None:
    node: dict[str, Any] = {"name": name}
    if kind == "schedule":
        node["granularity"] = defaults.get("granularity", "epoch")
    node.update({k: v for k, v in defaults.items() if not (kind == "schedule" and k == "granularity")})
    path = conf_dir() / kind / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(node, sort_keys=False))


def searchpath_override() -> str | None:
    """The Hydra override that makes the loaded plugins' configs composable (None when none is loaded)."""
    if not _LOADED:
        return None
    return f"hydra.searchpath=[file://{conf_dir()}]"
