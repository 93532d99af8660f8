"""Model and trainer lookup: this plugin's classes first, then RecBole's (as RecBole-GNN does)."""

import difflib
import functools
import importlib
import os
import pkgutil

from recbole.utils import get_trainer as recbole_get_trainer

PLUGIN_MODEL_MODULE = "recbole_llmsrec.model"
PLUGIN_TRAINER_MODULE = "recbole_llmsrec.trainer"
RECBOLE_MODEL_PACKAGES = ("general_recommender", "context_aware_recommender", "sequential_recommender",
                          "knowledge_aware_recommender", "exlib_recommender")


def plugin_model_names():
    return list(importlib.import_module(PLUGIN_MODEL_MODULE).__all__)


@functools.lru_cache(maxsize=1)
def recbole_model_modules():
    """``{module name: package}`` of RecBole's model files, found without importing them (importing
    ``exlib_recommender`` needs lightgbm and xgboost)."""
    root = os.path.dirname(importlib.util.find_spec("recbole.model").origin)
    return {name: package for package in RECBOLE_MODEL_PACKAGES
            for _, name, _ in pkgutil.iter_modules([os.path.join(root, package)])}


def _recbole_class_name(module, package):
    try:
        found = importlib.import_module(f"recbole.model.{package}.{module}")
    except ImportError:  # an exlib model whose library is not installed
        return module
    return next((name for name in dir(found) if name.lower() == module), module)


def get_model(model_name):
    """The model class named ``model_name``, the plugin's first; else a ValueError naming the closest."""
    found = getattr(importlib.import_module(PLUGIN_MODEL_MODULE), str(model_name), None)
    if isinstance(found, type):
        return found
    modules = recbole_model_modules()
    module = str(model_name).lower()
    if module in modules:
        try:
            found = getattr(importlib.import_module(f"recbole.model.{modules[module]}.{module}"),
                            model_name, None)
        except ImportError as err:
            raise ValueError(f"RecBole's {model_name} needs {err.name}: pip install {err.name}") from err
        if found is not None:
            return found
    names = {name.lower(): name for name in plugin_model_names()}
    names.update({m: _recbole_class_name(m, modules[m])
                  for m in difflib.get_close_matches(module, modules, n=3, cutoff=0.6)})
    closest = [names[m] for m in difflib.get_close_matches(module, names, n=3, cutoff=0.6)]
    raise ValueError(f"model {model_name!r} is neither a recbole-llmsrec model "
                     f"({', '.join(plugin_model_names())}) nor a RecBole model (names are case-sensitive)."
                     + (f" Did you mean {' or '.join(closest)}?" if closest else ""))


def is_plugin_model(model_class):
    """True when ``model_class`` is one of this plugin's models (exported by ``recbole_llmsrec.model``)."""
    plugin_models = importlib.import_module(PLUGIN_MODEL_MODULE)
    return getattr(plugin_models, model_class.__name__, None) is model_class


def get_trainer(model_type, model_name):
    """The plugin's ``<model_name>Trainer``, else RecBole's choice through ``trainer.extend_trainer``."""
    plugin_trainers = importlib.import_module(PLUGIN_TRAINER_MODULE)
    trainer = getattr(plugin_trainers, f"{model_name}Trainer", None)
    if trainer is None:
        trainer = plugin_trainers.extend_trainer(recbole_get_trainer(model_type, model_name))
    return trainer
