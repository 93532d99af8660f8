"""How the trainer scores an evaluation batch, the same for every model (the trainer's
``_neg_sample_batch_eval`` and ``_full_sort_batch_eval`` call these)."""

import numpy as np
import torch
from recbole.utils import EvaluatorType, ModelType

from recbole_llmsrec.hooks import model_hook
from recbole_llmsrec.llm.layers import first_rows

# RecBole 1.2.1 models whose predict scores unlike full_sort_predict (CORE's skips the item L2
# normalisation)
RECBOLE_MODELS_SCORING_FULL_SORT_DIFFERENTLY = ("CORE",)


def scores_candidates_from_full_sort(model):
    return (
        model_hook(model, "sampled_scores_from_full_sort")
        and type(model).__name__ not in RECBOLE_MODELS_SCORING_FULL_SORT_DIFFERENTLY
    )


def sampled_scores(trainer, batched_data, recbole_scoring):
    """Sampled evaluation reading the candidates' scores from one ``full_sort_predict`` row per
    user, not RecBole's ``predict`` per (user, candidate), except where scores would change
    (``recbole_scoring(batched_data)``, RecBole's way): a model whose ``full_sort_predict`` is
    missing or scores unlike ``predict`` (hook ``sampled_scores_from_full_sort``: ALLMRec; CORE), a
    sequential user with several rows (ratio split), the labeled mode (no row index at all)."""
    interaction, row_idx, positive_u, positive_i = batched_data
    config, model = trainer.config, trainer.model
    if config["eval_type"] != EvaluatorType.RANKING or not scores_candidates_from_full_sort(model):
        return recbole_scoring(batched_data)
    first_row = first_rows(row_idx)  # RecBole's row_idx: each row's user, 0 .. users - 1
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and len(positive_u) > len(first_row):
        return recbole_scoring(batched_data)  # several prefixes per user
    try:
        user_scores = model.full_sort_predict(interaction[first_row].to(trainer.device))
    except NotImplementedError:
        model.sampled_scores_from_full_sort = False
        return recbole_scoring(batched_data)
    user_scores = user_scores.view(len(first_row), -1)
    rows, items = (
        row_idx.to(trainer.device),
        interaction[config["ITEM_ID_FIELD"]].to(trainer.device),
    )
    scores = torch.full_like(user_scores, -np.inf)
    scores[rows, items] = user_scores[rows, items]
    return interaction, scores, positive_u, positive_i


def staged_full_sort(trainer, batched_data, recbole_scoring):
    """A model whose full sort works in stages (hook ``full_sort_predict_excluding``: ALLMRec) must
    not spend its stages on items the protocol scores ``-inf`` afterwards: it is called with exactly
    the items ``eval_mask_history`` masks (the target never; all False without masking), and the
    mask is applied to its scores as to every model's. Other models:
    ``recbole_scoring(batched_data)``."""
    rank_excluding = model_hook(trainer.model, "full_sort_predict_excluding")
    if rank_excluding is None:
        return recbole_scoring(batched_data)
    interaction, history_index, positive_u, positive_i = batched_data
    excluded = torch.zeros(len(interaction), trainer.tot_item_num, dtype=torch.bool)
    if history_index is not None:
        excluded[history_index] = True
    scores = rank_excluding(interaction.to(trainer.device), excluded).view(-1, trainer.tot_item_num)
    scores[:, 0] = -np.inf
    scores[excluded.to(scores.device)] = -np.inf
    return interaction, scores, positive_u, positive_i
