"""Model and trainer lookup: this plugin's classes first, then RecBole's (as RecBole-GNN does)."""

import importlib

from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

PLUGIN_MODEL_MODULE = "recbole_llmsrec.model"
PLUGIN_TRAINER_MODULE = "recbole_llmsrec.trainer"


def get_model(model_name):
    """Return the model class named ``model_name`` from this plugin, else from RecBole."""
    plugin_models = importlib.import_module(PLUGIN_MODEL_MODULE)
    if hasattr(plugin_models, model_name):
        return getattr(plugin_models, model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, ImportError) as err:
        # RecBole's search of an unknown name ends importing exlib_recommender (lightgbm, xgboost)
        raise ValueError(
            f"model {model_name!r} is neither a recbole-llmsrec model nor a RecBole model "
            f"(RecBole's lookup said: {err}). Check the spelling of `model`."
        ) from err


def is_plugin_model(model_class):
    """True when ``model_class`` is one of this plugin's models (exported by ``recbole_llmsrec.model``)."""
    plugin_models = importlib.import_module(PLUGIN_MODEL_MODULE)
    return getattr(plugin_models, model_class.__name__, None) is model_class


def get_trainer(model_type, model_name):
    """Return ``<model_name>Trainer`` from this plugin if it has one, else RecBole's choice extended
    with the plugin's evaluation protocol and schedule options (``trainer.extend_trainer``)."""
    plugin_trainers = importlib.import_module(PLUGIN_TRAINER_MODULE)
    trainer = getattr(plugin_trainers, f"{model_name}Trainer", None)
    if trainer is None:
        trainer = plugin_trainers.extend_trainer(recbole_get_trainer(model_type, model_name))
    return trainer
