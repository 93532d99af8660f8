"""RecBole ``Config`` that knows this plugin's models (the RecBole-GNN pattern).

Precedence, lowest to highest, is RecBole's own with the plugin's files slotted in beneath the user:
RecBole's internal defaults (overall, model, dataset, quick-start) < the plugin's shared defaults
(``properties/overall.yaml``, plugin models only) < the plugin model's ``properties/model/<Model>.yaml``
< the plugin's ``properties/dataset/<dataset>.yaml`` (item text columns of known datasets)
< the user's config files < config dict < command line.
"""

import os

from recbole.config import Config as RecBoleConfig

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

    def _get_model_and_dataset(self, model, dataset):
        if isinstance(model, str):
            # resolve the name here so RecBole's lookup (which knows only its own models) never runs
            model = get_model(model)
        elif model is None and isinstance(self.external_config_dict.get("model"), str):
            model = get_model(self.external_config_dict["model"])
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        if not is_plugin_model(model_class):
            return  # RecBole's own models get exactly RecBole's configuration
        for path in (
            os.path.join(self.properties_dir, "overall.yaml"),
            os.path.join(self.properties_dir, "model", f"{model}.yaml"),
            os.path.join(self.properties_dir, "dataset", f"{dataset}.yaml"),
        ):
            if os.path.isfile(path):
                self._update_internal_config_dict(path)
