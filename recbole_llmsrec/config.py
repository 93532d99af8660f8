"""RecBole ``Config`` that knows this plugin's models (the RecBole-GNN pattern).

Precedence, lowest first: RecBole's internal defaults < (plugin models only) the plugin's
``properties/overall.yaml`` < the model's YAML (``models/<name>/<Name>.yaml``, named by its registry
entry) < ``properties/dataset/<dataset>.yaml`` < the user's config files < config dict < command
line. Building one installs the RecBole fixes (``recbole_fixes.install``) and checks every setting
(``settings.check_settings``) before any data is read.
"""

import ast
import os

import torch
import yaml
from recbole.config import Config as RecBoleConfig

from recbole_llmsrec import recbole_fixes, registry
from recbole_llmsrec.distribution.process_group import join_process_group, launched_by_torchrun
from recbole_llmsrec.settings import check_dataset_name, check_eval_driven_keys, check_settings

PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "properties")
# Dict settings whose YAML defaults a partial user dict completes (``cf_config: {epochs: 5}`` keeps
# the rest)
MERGED_DICT_KEYS = ("cf_config",)


class Config(RecBoleConfig):
    properties_dir = PROPERTIES_DIR

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        recbole_fixes.install()  # the one explicit install (docs/architecture.md)
        # checkpoints hold this class: torch's weights-only loading (RecBole's too) must accept it;
        # RecBole's Config pickles its model class by name (recbole_fixes.checkpoint_loading)
        torch.serialization.add_safe_globals([Config])
        super().__init__(
            model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict
        )
        check_settings(self)  # every key the plugin adds, once, before any data is loaded
        if self["distributed_strategy"] == "fsdp" and self["single_spec"]:
            self.file_notes = [
                *getattr(self, "file_notes", []),
                (
                    "warning",
                    "distributed_strategy: "
                    "fsdp has no effect in one process: it shards across the processes of "
                    "torchrun or --nproc; this run trains unsharded",
                ),
            ]

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        check_eval_driven_keys(self.model, final)
        for key in MERGED_DICT_KEYS:
            default, given = self.internal_config_dict.get(key), self.external_config_dict.get(key)
            if isinstance(default, dict) and isinstance(given, dict):
                final[key] = {**default, **given}
        return final

    def _load_config_files(self, file_list):
        """RecBole's merge of the config files (later ones win), recording in ``file_notes`` each
        key a later file overrides and each file none of whose keys survives, for the run's log."""
        merged, origin, self.file_notes = {}, {}, []
        for path in file_list or []:
            with open(path, encoding="utf-8") as file:
                values = yaml.load(file.read(), Loader=self.yaml_loader) or {}
            for key, value in values.items():
                if key in merged and merged[key] != value:
                    self.file_notes.append(
                        (
                            "info",
                            f"config: {key}={value!r} from {path} overrides "
                            f"{merged[key]!r} from {origin[key]}",
                        )
                    )
                merged[key], origin[key] = value, path
        for path in file_list or []:
            if path not in origin.values():
                self.file_notes.append(
                    (
                        "warning",
                        f"config file {path} has no effect: every key it "
                        "sets is overridden by a later file",
                    )
                )
        return merged

    def _convert_config_dict(self, config_dict):
        """RecBole's conversion of command-line and dict strings to values, with
        ``ast.literal_eval``: RecBole ``eval``-ed every such string, so a value ran as Python code.
        Literals (numbers, lists, dicts, None, True/False in any case) convert as before; anything
        else stays a string."""
        for key, value in config_dict.items():
            if not isinstance(value, str):
                continue
            try:
                converted = ast.literal_eval(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                converted = {"true": True, "false": False}.get(value.lower(), value)
            config_dict[key] = converted
        return config_dict

    def _init_device(self):
        # a torchrun or --nproc launch joins its process group here (NCCL on GPU, gloo on CPU)
        if launched_by_torchrun() or "local_rank" in self.final_config_dict:
            return join_process_group(self.final_config_dict)
        return super()._init_device()

    def _get_model_and_dataset(self, model, dataset):
        check_dataset_name(
            dataset if dataset is not None else self.external_config_dict.get("dataset")
        )
        if isinstance(model, str):  # resolved here: RecBole's lookup knows only its own models
            model = registry.get_model(model)
        elif model is None and isinstance(self.external_config_dict.get("model"), str):
            model = registry.get_model(self.external_config_dict["model"])
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        # what the plugin's YAMLs set, for configs derived from this one
        self.plugin_config_dict = {}
        if not registry.is_plugin_model(model_class):
            return  # RecBole's own models get exactly RecBole's configuration
        own = registry.entry_of(model).config_file
        if own and not os.path.isfile(own):
            raise FileNotFoundError(f"the YAML of {model}'s registry entry does not exist: {own}")
        for path in (
            os.path.join(self.properties_dir, "overall.yaml"),
            own,
            os.path.join(self.properties_dir, "dataset", f"{dataset}.yaml"),
        ):
            if path and os.path.isfile(path):
                self.plugin_config_dict.update(self._update_internal_config_dict(path) or {})


def derived_config(parent, model, overrides):
    """A ``Config`` for ``model`` on ``parent``'s run (e.g. an LLMSRec run's SASRec teacher):
    RecBole's defaults for ``model`` < ``parent``'s plugin YAML values, files, dict and command line
    < ``overrides``; built by RecBole like any config, so overrides are completed and checked
    (copying a finished config crashed on ``eval_args``). ``sys.argv`` is not read again."""

    class _Derived(Config):
        def _load_config_files(self, file_list):
            return dict(parent.file_config_dict)

        def _load_variable_config_dict(self, config_dict):
            return dict(parent.variable_config_dict)

        def _load_cmd_line(self):
            return {**parent.cmd_config_dict, **overrides}

        def _load_internal_config_dict(self, model, model_class, dataset):
            super()._load_internal_config_dict(model, model_class, dataset)
            # a config pickled before plugin_config_dict existed: its internal layer holds those
            # values
            plugin = getattr(parent, "plugin_config_dict", None)
            self.internal_config_dict.update(
                parent.internal_config_dict if plugin is None else plugin
            )

    config = _Derived(model=model, dataset=parent["dataset"])
    config.__class__ = Config  # a plain Config: it is pickled into the checkpoint
    return config
