"""Each item's text from the ``.item`` fields named by ``item_text_*`` and ``item_title_*`` (README
"Config keys this plugin adds"), read back from RecBole's loaded dataset: a ``token`` through its
id-to-token table, a ``token_seq`` joined by ``seq_separator``, a ``float`` as RecBole holds it
(normalised when ``normalize_all`` covers it, a missing one imputed with the column mean). Padding
item 0 gets ''.
"""

import math

import numpy as np
import pandas as pd
from recbole.utils import FeatureSource, FeatureType

PAD_TOKEN = "[PAD]"


def _item_fields(dataset):
    return [f for f, src in dataset.field2source.items() if src == FeatureSource.ITEM]


def _check_fields(fields, dataset):
    if isinstance(fields, str):
        fields = [fields]
    if not fields:
        raise ValueError(
            "item_text_fields is not set: name the .item columns that describe an item, e.g. "
            "`item_text_fields: [title, description]`, and load them with "
            "`load_col: {inter: [...], item: [item_id, title, description]}`."
        )
    loaded = _item_fields(dataset)
    for field in fields:
        if field not in loaded:
            raise ValueError(
                f"item_text_fields entry {field!r} is not a loaded field of "
                f"{dataset.dataset_name}.item (loaded item fields: {loaded}). Fix: name a "
                f"column of the .item file and list it under "
                f"`load_col: {{item: [{dataset.iid_field}, {field}, ...]}}`."
            )
    return list(fields)


def _item_column(dataset, field):
    """``field`` per item id as numpy rows: ``item_feat`` is a DataFrame ordered by item id right
    after ``create_dataset`` and an ``Interaction`` once ``data_preparation`` has run."""
    column = dataset.item_feat[field]
    if isinstance(column, pd.Series):
        return [np.asarray(row) for row in column.to_numpy()]
    return list(column.numpy())


def _field_values(dataset, field):
    """The text of ``field`` for every item id (index = internal item id), '' where missing."""
    rows = _item_column(dataset, field)
    ftype = dataset.field2type[field]
    if ftype in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
        tokens = np.asarray(dataset.field2id_token[field], dtype=object)
        separator = dataset.config["seq_separator"]
        return [
            separator.join(
                str(t) for t in tokens[np.atleast_1d(row).astype(np.int64)] if t != PAD_TOKEN
            )
            for row in rows
        ]
    if ftype in (FeatureType.FLOAT, FeatureType.FLOAT_SEQ):
        return [
            " ".join(f"{v:g}" for v in np.atleast_1d(row).tolist() if not math.isnan(v))
            for row in rows
        ]
    raise ValueError(f"item_text_fields entry {field!r} has unsupported type {ftype}.")


def _clean(value):
    return " ".join(str(value).split())  # tabs/newlines/runs of spaces -> one space


def build_item_texts(dataset, config, fields=None, template=None, fallback=None):
    """The text of each internal item id (``dataset.item_num`` strings); ``None`` arguments: the
    config's."""
    fields = _check_fields(config["item_text_fields"] if fields is None else fields, dataset)
    template = config["item_text_template"] if template is None else template
    separator = config["item_text_separator"]
    missing_value = config["item_text_missing_value"]
    fallback = config["item_text_fallback"] if fallback is None else fallback
    for key, value in (("item_text_separator", separator), ("item_text_fallback", fallback)):
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}.")
    try:
        template.format(name="name", value="value")
    except (AttributeError, KeyError, IndexError) as err:
        raise ValueError(
            f"item_text_template={template!r} may only use the placeholders {{name}} and {{value}}."
        ) from err

    columns = {field: _field_values(dataset, field) for field in fields}
    texts = [""]
    for item_id in range(1, dataset.item_num):
        parts = []
        for field in fields:
            value = _clean(columns[field][item_id])
            if not value:
                if missing_value is None:
                    continue
                value = missing_value
            parts.append(template.format(name=field, value=value))
        texts.append(separator.join(parts) or fallback)
    return texts


def build_item_titles(dataset, config):
    """Each item's title (``item_title_field``), ``item_title_fallback`` where it has none."""
    if not config["item_title_field"]:
        raise ValueError("item_title_field is not set: name the .item column holding item titles.")
    try:
        return build_item_texts(
            dataset,
            config,
            fields=[config["item_title_field"]],
            template="{value}",
            fallback=config["item_title_fallback"],
        )
    except ValueError as err:
        raise ValueError(str(err).replace("item_text_fields entry", "item_title_field")) from None


def without_special_tokens(texts, tokens):
    """``texts`` without the ``tokens``, however nested ("[History[UserOut]Emb]" -> "[HistoryEmb]"
    is removed too): a title must never fake a soft-token slot of a prompt."""
    cleaned = []
    for text in texts:
        previous = None
        while text != previous:
            previous = text
            for token in tokens:
                text = text.replace(token, "")
        cleaned.append(text)
    return cleaned


def truncate_to_tokens(texts, tokenizer, max_tokens):
    """Cut each text to its first ``max_tokens`` tokens (special tokens not counted): verbatim up to
    the last kept token's offset with a fast tokenizer, the kept tokens decoded with a slow one."""
    if max_tokens is None or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}.")
    encoded = tokenizer(
        list(texts), add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast
    )
    truncated = []
    for i, text in enumerate(texts):
        ids = encoded["input_ids"][i]
        if len(ids) <= max_tokens:
            truncated.append(text)
        elif tokenizer.is_fast:
            truncated.append(text[: encoded["offset_mapping"][i][max_tokens - 1][1]])
        else:
            truncated.append(tokenizer.decode(ids[:max_tokens]))
    return truncated
