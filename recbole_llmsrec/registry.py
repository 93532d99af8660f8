"""The plugin's models, named in one table, and the lookup of any model: the plugin's first, then
RecBole's (as RecBole-GNN does; RecBole3.0 keeps such a table too).

``MODELS`` maps each model name to a ``ModelEntry``: where its model, dataset and trainer classes
live, its settings module and its YAML of defaults. Nothing is imported until a model is asked for,
so importing this module loads neither torch nor transformers (tested). ``register`` adds an entry
(docs/extending.md).
"""

import dataclasses
import difflib
import functools
import importlib
import importlib.util
import os
import pkgutil

MODELS_PACKAGE = "recbole_llmsrec.models"
RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One plugin model. ``model``, ``dataset`` and ``trainer`` are ``"module:Class"`` (or the class
    itself); ``dataset``/``trainer`` ``None``: RecBole's dataset class for the model's type and the
    plugin's ``Trainer``. ``settings``: a module with ``SETTINGS`` (the model's keys,
    ``settings.Setting``)
    and optionally ``check(config)``. ``config_file``: the YAML of the model's defaults. ``fsdp``:
    whether ``distributed_strategy: fsdp`` is allowed (models whose LLMs train)."""

    name: str
    model: object
    dataset: object = None
    trainer: object = None
    settings: str = None
    config_file: str = None
    fsdp: bool = False


def _folder(name):
    """An entry for the model folder ``recbole_llmsrec/models/<name lower>/`` (the house layout)."""
    package = f"{MODELS_PACKAGE}.{name.lower()}"
    return dict(
        model=f"{package}.model:{name}",
        settings=f"{package}.settings",
        config_file=os.path.join(os.path.dirname(__file__), "models", name.lower(), f"{name}.yaml"),
    )


MODELS = {
    "LLMSRec": ModelEntry(
        "LLMSRec",
        dataset="recbole_llmsrec.models.llmsrec.dataset:LLMSRecDataset",
        trainer="recbole_llmsrec.models.cf_teacher.trainer:CFTeacherTrainer",
        **_folder("LLMSRec"),
    ),
    "ALLMRec": ModelEntry(
        "ALLMRec",
        dataset="recbole_llmsrec.models.allmrec.dataset:ALLMRecDataset",
        trainer="recbole_llmsrec.models.allmrec.trainer:ALLMRecTrainer",
        **_folder("ALLMRec"),
    ),
    "HLLM": ModelEntry(
        "HLLM",
        dataset="recbole_llmsrec.models.hllm.dataset:HLLMDataset",
        trainer="recbole_llmsrec.models.hllm.trainer:HLLMTrainer",
        fsdp=True,
        **_folder("HLLM"),
    ),
    "LCRec": ModelEntry(
        "LCRec",
        # LC-Rec's schedule is HLLM's (cosine with warm-up over warmup_ratio of the steps)
        trainer="recbole_llmsrec.models.hllm.trainer:HLLMTrainer",
        fsdp=True,
        **_folder("LCRec"),
    ),
}


def register(entry):
    """Add (or replace) a plugin model; returns the entry."""
    MODELS[entry.name] = entry
    return entry


def resolve(reference):
    """The object a ``"module:attribute"`` reference of this table names (a class passes
    through)."""
    if not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def plugin_model_names():
    return sorted(MODELS)


def entry_of(model_name):
    """The plugin's entry for ``model_name``, or None (a RecBole model, or unknown)."""
    return MODELS.get(str(model_name))


def is_plugin_model(model_class):
    """True when ``model_class`` is the class of one of the plugin's entries."""
    entry = entry_of(getattr(model_class, "__name__", None))
    return entry is not None and resolve(entry.model) is model_class


@functools.lru_cache(maxsize=1)
def recbole_model_modules():
    """``{module name: package}`` of RecBole's model files, found without importing them (importing
    ``exlib_recommender`` needs lightgbm and xgboost)."""
    root = os.path.dirname(importlib.util.find_spec("recbole.model").origin)
    return {
        name: package
        for package in RECBOLE_MODEL_PACKAGES
        for _, name, _ in pkgutil.iter_modules([os.path.join(root, package)])
    }


def _recbole_class_name(module, package):
    try:
        found = importlib.import_module(f"recbole.model.{package}.{module}")
    except ImportError:  # an exlib model whose library is not installed
        return module
    return next((name for name in dir(found) if name.lower() == module), module)


def _recbole_model(model_name):
    modules = recbole_model_modules()
    module = str(model_name).lower()
    if module not in modules:
        return None
    try:
        found = importlib.import_module(f"recbole.model.{modules[module]}.{module}")
    except ImportError as err:
        raise ValueError(
            f"RecBole's {model_name} needs {err.name}: pip install {err.name}"
        ) from err
    return getattr(found, str(model_name), None)


def _unknown_model_error(model_name):
    modules = recbole_model_modules()
    module = str(model_name).lower()
    names = {name.lower(): name for name in plugin_model_names()}
    close = difflib.get_close_matches(module, modules, n=3, cutoff=0.6)
    names.update({m: _recbole_class_name(m, modules[m]) for m in close})
    closest = [names[m] for m in difflib.get_close_matches(module, names, n=3, cutoff=0.6)]
    return ValueError(
        f"model {model_name!r} is neither a recbole-llmsrec model "
        f"({', '.join(plugin_model_names())}) nor a RecBole model (names are case-sensitive)."
        + (f" Did you mean {' or '.join(closest)}?" if closest else "")
    )


def get_model(model_name):
    """The model class named ``model_name``, the plugin's first; else a ValueError naming the
    closest."""
    entry = entry_of(model_name)
    if entry is not None:
        return resolve(entry.model)
    found = _recbole_model(model_name)
    if found is None:
        raise _unknown_model_error(model_name)
    return found


def registered_model_class(name):
    """The plugin's or RecBole's recommender class called ``name``, or None (unknown, not
    installed). Only names in these tables resolve: a name read from a file never imports a module
    it names."""
    from recbole.model.abstract_recommender import AbstractRecommender

    if not str(name).isidentifier():
        return None
    try:
        found = get_model(name)
    except (ValueError, ImportError):
        return None  # the model's code is not installed here; the rest of the config still loads
    return found if isinstance(found, type) and issubclass(found, AbstractRecommender) else None


def dataset_class(model_name):
    """The dataset class of a plugin model (None: RecBole's choice)."""
    entry = entry_of(model_name)
    return None if entry is None or entry.dataset is None else resolve(entry.dataset)


def trainer_class(model_name):
    """The trainer class of a plugin model (None: the plugin's ``Trainer``, or RecBole's choice)."""
    entry = entry_of(model_name)
    return None if entry is None or entry.trainer is None else resolve(entry.trainer)


def settings_module(model_name):
    """The settings module of a plugin model (None when it has none)."""
    entry = entry_of(model_name)
    if entry is None or entry.settings is None:
        return None
    return importlib.import_module(entry.settings)
