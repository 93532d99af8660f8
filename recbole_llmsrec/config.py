"""RecBole ``Config`` that knows this plugin's models (the RecBole-GNN pattern).

Precedence, lowest to highest, is RecBole's own with the plugin's files slotted in beneath the user:
RecBole's internal defaults (overall, model, dataset, quick-start) < the plugin's shared defaults
(``properties/overall.yaml``, plugin models only) < the plugin model's ``properties/model/<Model>.yaml``
< the plugin's ``properties/dataset/<dataset>.yaml`` (item text columns of known datasets)
< the user's config files < config dict < command line.
"""

import os

from recbole.config import Config as RecBoleConfig

from recbole_llmsrec import distributed
from recbole_llmsrec.utils import get_model, is_plugin_model

PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "properties")


# Dict-valued plugin settings whose YAML defaults a user's partial dict completes instead of replacing
# (``cf_config: {epochs: 5}`` keeps the teacher's other defaults).
MERGED_DICT_KEYS = ("cf_config",)


class Config(RecBoleConfig):
    properties_dir = PROPERTIES_DIR

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        for key in MERGED_DICT_KEYS:
            default, given = self.internal_config_dict.get(key), self.external_config_dict.get(key)
            if isinstance(default, dict) and isinstance(given, dict):
                final[key] = {**default, **given}
        return final

    def _init_device(self):
        # a torchrun or --nproc launch joins its process group here (NCCL on GPU, gloo on CPU)
        if distributed.launched_by_torchrun() or "local_rank" in self.final_config_dict:
            return distributed.join_process_group(self.final_config_dict)
        return super()._init_device()

    def _get_model_and_dataset(self, model, dataset):
        if isinstance(model, str):
            # resolve the name here so RecBole's lookup (which knows only its own models) never runs
            model = get_model(model)
        elif model is None and isinstance(self.external_config_dict.get("model"), str):
            model = get_model(self.external_config_dict["model"])
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.plugin_config_dict = {}  # what the plugin's YAMLs set, for configs derived from this one
        if not is_plugin_model(model_class):
            return  # RecBole's own models get exactly RecBole's configuration
        for path in (
            os.path.join(self.properties_dir, "overall.yaml"),
            os.path.join(self.properties_dir, "model", f"{model}.yaml"),
            os.path.join(self.properties_dir, "dataset", f"{dataset}.yaml"),
        ):
            if os.path.isfile(path):
                self.plugin_config_dict.update(self._update_internal_config_dict(path) or {})


def require_at_least(config, key, minimum):
    """Refuse an integer setting below ``minimum``, naming the key and the allowed range."""
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key}={value!r} is not allowed: it must be an integer >= {minimum}.")
    return value


def derived_config(parent, model, overrides):
    """A ``Config`` for ``model`` on the same run as ``parent`` (e.g. the SASRec teacher of an LLMSRec run).

    Layers, lowest first: RecBole's defaults for ``model``, the plugin YAML values of ``parent``, the
    parent's config files, dict and command line as they were parsed, then ``overrides``. It is built
    and processed by RecBole like any config, so an override of ``eval_args``, ``metrics`` or ``topk``
    is completed and checked as RecBole does (copying a finished config and updating keys skipped that
    and crashed on ``eval_args``). ``sys.argv`` is not read again.
    """

    class _Derived(Config):
        def _load_config_files(self, file_list):
            return dict(parent.file_config_dict)

        def _load_variable_config_dict(self, config_dict):
            return dict(parent.variable_config_dict)

        def _load_cmd_line(self):
            return {**parent.cmd_config_dict, **overrides}

        def _load_internal_config_dict(self, model, model_class, dataset):
            super()._load_internal_config_dict(model, model_class, dataset)
            # a config pickled before plugin_config_dict existed: its internal layer holds those values
            plugin = getattr(parent, "plugin_config_dict", None)
            self.internal_config_dict.update(parent.internal_config_dict if plugin is None else plugin)

    config = _Derived(model=model, dataset=parent["dataset"])
    config.__class__ = Config  # a plain Config: it is pickled into the checkpoint
    return config
