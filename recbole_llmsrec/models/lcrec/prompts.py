"""LC-Rec's instruction data (spec ``lcrec.md`` 3): the prompt templates, read as data from a YAML
file (``prompts.yaml`` beside this module, LC-Rec's ``prompt.py`` transcribed; or
``lcrec_prompts_file``), and the texts each task's examples fill them with.

A template is ``{instruction, response}`` with ``{placeholder}`` slots; ``sft_template`` wraps the
instruction. The placeholders an example can fill: ``item`` (the item's index tokens),
``inters`` (the history's index tokens joined by ``history_separator``), ``inter_titles`` (the
history's titles, quoted), ``title``, ``description``, and the user texts named by
``lcrec_user_text_fields`` (``explicit_preference``, ``query``, ...). A task uses only the templates
whose placeholders are all available; a task left with none is refused when the model is built,
naming what is missing.
"""

import os
import re
import string

import numpy as np
import yaml
from recbole.utils import FeatureType

from recbole_llmsrec.data.item_text import PAD_TOKEN, build_item_texts, build_item_titles

DEFAULT_PROMPTS = os.path.join(os.path.dirname(__file__), "prompts.yaml")
ITEM_PLACEHOLDERS = {"item", "title", "description"}
HISTORY_PLACEHOLDERS = {"inters", "inter_titles"}
TITLE_PUNCTUATION = ".!?,;:`"  # LC-Rec strips these from both ends of a title


def placeholders(template):
    """The ``{name}`` slots of a template string."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def load_prompts(path, tasks):
    """``(sft_template, {task: [{instruction, response}, ...]})`` read safely from ``path`` (plain
    YAML data); a malformed file or a task without templates is a ValueError naming the file."""
    with open(path, encoding="utf-8") as file:
        data = yaml.safe_load(file)
    sft = data.get("sft_template") if isinstance(data, dict) else None
    if not isinstance(sft, str) or placeholders(sft) != {"instruction"}:
        raise ValueError(f"{path}: sft_template must be a string with exactly {{instruction}}.")
    templates = {}
    for task in tasks:
        entries = data.get(task)
        valid = isinstance(entries, list) and all(
            isinstance(e, dict)
            and isinstance(e.get("instruction"), str)
            and isinstance(e.get("response"), str)
            for e in entries
        )
        if not entries or not valid:
            raise ValueError(f"{path}: {task} must be a list of {{instruction, response}} strings.")
        templates[task] = entries
    return sft, templates


def usable_templates(templates, available, task):
    """The templates of ``task`` whose placeholders are all in ``available``; none is an error."""
    usable = [
        t for t in templates if placeholders(t["instruction"] + t["response"]) <= set(available)
    ]
    if not usable:
        needed = sorted(
            set().union(*(placeholders(t["instruction"] + t["response"]) for t in templates))
            - set(available)
        )
        raise ValueError(
            f"lcrec_tasks holds {task}, but none of its templates can be filled: they need "
            f"{', '.join(needed)} (map user texts with lcrec_user_text_fields, item descriptions "
            "with item_description_fields), or leave the task out."
        )
    return usable


def user_texts(dataset, field):
    """The text of the ``.user`` column ``field`` per internal user id ('' where missing)."""
    if dataset.user_feat is None or field not in dataset.user_feat:
        raise ValueError(
            f"lcrec_user_text_fields names {field!r}, which is not a loaded .user column: list "
            f"it under load_col: {{user: [{dataset.uid_field}, {field}]}}."
        )
    if dataset.field2type[field] not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
        raise ValueError(f"lcrec_user_text_fields: {field!r} must be a token or token_seq column.")
    tokens = np.asarray(dataset.field2id_token[field], dtype=object)
    rows = dataset.user_feat[field]
    rows = rows.numpy() if hasattr(rows, "numpy") else np.asarray(rows.tolist(), dtype=object)
    return [
        " ".join(str(t) for t in tokens[np.atleast_1d(row).astype(np.int64)] if t != PAD_TOKEN)
        for row in rows
    ]


class TaskTexts:
    """Every text a task's example may quote: per item (index tokens, title, description) and per
    user (the mapped ``.user`` columns); ``fill`` writes one example."""

    def __init__(self, config, dataset, code_texts):
        self.code_texts = code_texts
        self.separator = config["history_separator"]
        self.numbered = bool(config["history_numbered"])
        titles = build_item_titles(dataset, config)
        self.titles = [title.strip().strip(TITLE_PUNCTUATION) for title in titles]
        fields = config["item_description_fields"] or []
        self.descriptions = (
            build_item_texts(dataset, config, fields=fields, template="{value}", fallback="")
            if fields
            else None
        )
        self.user_fields = {
            placeholder: user_texts(dataset, column)
            for placeholder, column in (config["lcrec_user_text_fields"] or {}).items()
        }

    def available(self, with_history):
        """The placeholders this data can fill (``with_history``: an example with a history)."""
        names = {"item", "title"} | set(self.user_fields)
        if self.descriptions is not None:
            names.add("description")
        return names | (HISTORY_PLACEHOLDERS if with_history else set())

    def _joined(self, parts):
        if self.numbered:  # LC-Rec's add_prefix
            parts = [f"{k}. {part}" for k, part in enumerate(parts, 1)]
        return self.separator.join(parts)

    def values(self, item, history=None, user=None):
        """The placeholder values of an example about ``item`` (after ``history``, for ``user``)."""
        values = {"item": self.code_texts[item], "title": self.titles[item]}
        if self.descriptions is not None:
            values["description"] = self.descriptions[item]
        if history is not None:
            values["inters"] = self._joined([self.code_texts[i] for i in history])
            values["inter_titles"] = self._joined([f'"{self.titles[i]}"' for i in history])
        if user is not None:
            values.update({name: texts[user] for name, texts in self.user_fields.items()})
        return values


def fill(template, values):
    """``template`` with its placeholders replaced (a literal brace in a value stays literal)."""
    return re.sub(r"{(\w+)}", lambda match: str(values[match.group(1)]), template)
