"""Every hook between models, trainers, datasets and the evaluation layer, declared here and only
here.

A hook is a method or attribute a class MAY provide to change what the plugin's shared code does
with it. Each is declared below with its default and a docstring (who calls it, when, what it
returns). The shared code reads a hook only through ``model_hook`` (any model, RecBole's included: a
model without the hook gets the default), or calls it on a class that derives from the declaring
base class here. The test ``tests/test_structure.py`` checks that no other module looks a hook name
up by ``getattr``/``hasattr``.
"""


class ModelHooks:
    """Optional hooks of any recommender trained through the plugin. RecBole's models have none of
    them and get these defaults; the plugin's models derive from this class."""

    #: Sampled evaluation may read a user's candidate scores from one ``full_sort_predict`` row
    #: (``evaluation.scoring.sampled_scores``). False where that would change the scores
    #: (ALLMRec ranks a user's candidates together in ``predict``).
    sampled_scores_from_full_sort = True

    #: State-dict prefixes a checkpoint leaves out (rebuilt from files, e.g. a frozen LLM,
    #: ``"llm."``). ``distributed_strategy: fsdp`` is refused for such models.
    unsaved_prefixes = ()

    #: How many prompts were cut to the LLM's context so far; logged at the end of a run.
    prompts_shortened = 0

    def after_optimizer_step(self):
        """Called by the training loop (``distribution.training.train_epoch``) after every optimizer
        step, e.g. to clamp a parameter (HLLM's temperature). Returns nothing."""

    #: ``full_sort_predict_excluding(interaction, excluded) -> [B, n_items] scores``, or None.
    #: A model whose full sort works in stages (retrieve, then rerank a few: ALLMRec) defines it;
    #: the evaluation layer (``evaluation.scoring.staged_full_sort``) then calls it instead of
    #: ``full_sort_predict`` with ``excluded`` ([B, n_items] bool): exactly the items the
    #: protocol scores -inf afterwards (``eval_mask_history``; the target never), so no stage is
    #: spent on them.
    full_sort_predict_excluding = None


def _declared(holder):
    """The names ``holder`` declares (its public attributes and methods)."""
    return tuple(name for name in vars(holder) if not name.startswith("_"))


MODEL_HOOKS = _declared(ModelHooks)


def model_hook(model, name):
    """``model``'s hook ``name`` (one of ``MODEL_HOOKS``), or its default from ``ModelHooks``."""
    if name not in MODEL_HOOKS:
        raise KeyError(f"{name!r} is not a hook declared in recbole_llmsrec.hooks.ModelHooks")
    default = getattr(ModelHooks, name)
    found = getattr(model, name, default)
    return None if callable(default) and found is default else found


class TeacherStudentHooks:
    """What a model trained by ``cf_teacher.trainer.CFTeacherTrainer`` provides (its base class
    ``cf_teacher.model.LLMWithCFTeacher`` implements both)."""

    #: Whether the frozen CF teacher holds trained weights (loaded or pre-trained), a bool or a bool
    #: tensor (a buffer, so that checkpoints keep it): read by the trainer before training; if False
    #: it pre-trains the teacher (stage 0). Declared, not defaulted: a buffer or property provides
    # it.
    cf_teacher_ready: bool

    def load_cf_teacher(self, state_dict):
        """Called by the trainer with the pre-trained teacher's state dict; afterwards
        ``cf_teacher_ready`` is True."""
        raise NotImplementedError


class ItemMatrixHooks:
    """What a model whose scores use every item's representation provides (``llm.layers.
    ItemMatrixPerEvaluation`` computes the matrix once per evaluation with them)."""

    def compute_item_matrix(self, items):
        """``[len(items), D]`` representations of the item ids ``items`` (a 1-d tensor, on
        ``item_embedding_device()``), called without grad over shards of the catalogue."""
        raise NotImplementedError

    def item_embedding_device(self):
        """The device on which ``compute_item_matrix`` takes its item ids."""
        raise NotImplementedError


class StagedTrainerHooks:
    """What a trainer whose model trains in stages provides
    (``cf_teacher.trainer.CFTeacherTrainer``)."""

    def run_pending_stages(self, train_data, show_progress):
        """Called at the start of ``fit``: trains or loads every stage before the model's own
        training that is not done yet (the CF teacher; A-LLMRec's alignment). Returns nothing."""


class SplitAttributes:
    """What the plugin's data layer attaches to RecBole's splits and loaders, read through
    ``split_attribute`` (None where absent: RecBole's own splits and loaders)."""

    #: users x items CSR of every training interaction, on a training split built by
    #: ``data.dataset.UserSequenceDataset`` (which keeps one row or window per user, so the rows no
    #: longer hold them all): read for negatives and the protocol's histories.
    history_matrix = None

    #: ``(train, train + valid, train + valid + test)``: users x items CSR of every interaction of
    #: the splits so far, on a training split once ``data.sequences.cumulative_interactions`` ran
    #: (by the machine's first process in a distributed run, then shared): the protocol's
    #: histories.
    cumulative_interactions = None

    #: Each item's number of training users, on the valid and test loaders of
    #: ``evaluation.loaders.data_preparation`` with ``eval_item_groups``: read by the trainer.
    item_train_counts = None


SPLIT_ATTRIBUTES = _declared(SplitAttributes)


def split_attribute(holder, name):
    """The split's or loader's attribute ``name`` (one of ``SPLIT_ATTRIBUTES``), or None."""
    if name not in SPLIT_ATTRIBUTES:
        raise KeyError(f"{name!r} is not declared in recbole_llmsrec.hooks.SplitAttributes")
    return getattr(holder, name, None)


class SequenceDatasetHooks:
    """What a ``data.dataset.UserSequenceDataset`` subclass may provide."""

    def window_stride(self):
        """None: the training split keeps each user's last prefix only; an integer k: every k-th
        prefix counted back from the last (HLLM: windows of ``MAX_ITEM_LIST_LENGTH``)."""
        return None
