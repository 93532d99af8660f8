"""LC-Rec ("Adapting Large Language Models by Integrating Collaborative Semantics for
Recommendation", Zheng et al., ICDE'24; code RUCAIBox/LC-Rec) as a RecBole sequential recommender.

Every item gets an index, a short tuple of codes (``item_index``: LC-Rec's RQ-VAE over item text
embeddings, or P5's sequential, collaborative or random indexing; ``models.generative.item_index``),
each (level, code) one token added to a causal LLM's vocabulary (``<a_12><b_3><c_200>``). The LLM is
tuned on instructions (spec ``lcrec.md`` 3; templates in ``prompts.yaml``): ``seqrec`` (history ->
next item's index), ``item2index``/``index2item`` (an item's title or description <-> its index),
``fusionseqrec`` (history as indices -> next title or description; history as titles -> next index),
and ``itemsearch``/``preferenceobtain`` where user texts exist; the loss is on the response tokens
only. It recommends by beam search constrained to the trie of item indices (``num_beams`` items per
user, each scored by its index's log-likelihood; every other item -inf, never retrieved).

Departures (spec ``lcrec.md`` 6, README "Generative recommenders"): the constraint is a trie of the
items' indices (the original allowed any code of a level at each step, so it could generate an
index no item has); ``eval_mask_history`` removes the user's earlier items from the trie before the
search (the target never); prompt and response are tokenized apart and joined, so the loss mask is
exact (the original masked by the length of the separately tokenized prompt, and its pad token was
``unk``, so ``unk`` response tokens were never learned); tasks are mixed per batch: each training
row gives one example of every row task, and ``item2index``/``index2item`` see every item once per
epoch in seeded slices of the steps (the original shuffled all examples together, and sampled
``fusionseqrec`` rows); sampled evaluation scores each candidate by its teacher-forced
log-likelihood.
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_llmsrec.distribution.process_group import rank
from recbole_llmsrec.hooks import ModelHooks
from recbole_llmsrec.llm.layers import rows_by_user
from recbole_llmsrec.llm.loading import apply_lora, attention_kernels, load_llm
from recbole_llmsrec.models.generative.beam_search import (
    code_log_likelihoods,
    constrained_beam_search,
)
from recbole_llmsrec.models.generative.item_index import build_item_index
from recbole_llmsrec.models.generative.trie import IndexTrie
from recbole_llmsrec.models.lcrec.prompts import (
    DEFAULT_PROMPTS,
    TaskTexts,
    fill,
    load_prompts,
    usable_templates,
)

ROW_TASKS = ("seqrec", "fusionseqrec", "itemsearch", "preferenceobtain")  # one example per row
ITEM_TASKS = ("item2index", "index2item")  # every item once per epoch


def index_token(level, value):
    """The vocabulary token of ``value`` at ``level``: ``<a_12>`` (LC-Rec's names)."""
    return f"<{chr(ord('a') + level)}_{value}>"


def add_index_tokens(tokenizer, llm, codebook_sizes):
    """Add every (level, value) token to ``tokenizer`` and grow ``llm``'s embeddings and head;
    returns ``level_tokens``: per level, the vocabulary id of each value."""
    names = [
        [index_token(level, v) for v in range(size)] for level, size in enumerate(codebook_sizes)
    ]
    tokenizer.add_tokens([name for level in names for name in level])
    llm.resize_token_embeddings(len(tokenizer))
    return [torch.tensor(tokenizer.convert_tokens_to_ids(level)) for level in names]


def padded(sequences, pad, left, labels=None):
    """``(ids, attention_mask, labels)`` of token lists padded to the longest (``left`` for
    generation); ``labels`` (lists like ``sequences``, -100 where no loss) padded with -100."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    targets = torch.full((len(sequences), width), -100, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span], mask[row, span] = torch.tensor(sequence), 1
        if labels is not None:
            targets[row, span] = torch.tensor(labels[row])
    return ids, mask, targets


class LCRec(ModelHooks, SequentialRecommender):
    input_type = InputType.POINTWISE
    # beam search gives num_beams items a score; sampled candidates are scored in predict
    sampled_scores_from_full_sort = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        index = build_item_index(config, dataset)
        self.codebook_sizes = tuple(index.codebook_sizes)
        # the checkpoint carries the codes: a loaded model generates the indices it was trained on
        self.register_buffer("item_codes", index.codes.clone())
        self.llm, self.tokenizer = load_llm(
            config["llm_path"],
            dtype=config["llm_dtype"],
            gradient_checkpointing=bool(config["llm_gradient_checkpointing"]),
            trust_remote_code=bool(config["trust_remote_code"]),
        )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.level_tokens = add_index_tokens(self.tokenizer, self.llm, self.codebook_sizes)
        if config["llm_lora"]:  # the new index tokens' rows must train: embeddings and head in full
            self.llm = apply_lora(
                self.llm,
                config["llm_lora"],
                gradient_checkpointing=bool(config["llm_gradient_checkpointing"]),
                modules_to_save=self._embedding_module_names(),
            )
        self._read_settings(config, dataset)
        self._views = None  # the trie and index texts, rebuilt from item_codes when it changes

    def _embedding_module_names(self):
        named = {module: name for name, module in self.llm.named_modules()}
        return [
            named[self.llm.get_input_embeddings()].split(".")[-1],
            named[self.llm.get_output_embeddings()].split(".")[-1],
        ]

    def _read_settings(self, config, dataset):
        self.tasks = list(config["lcrec_tasks"])
        self.sft_template, templates = load_prompts(
            config["lcrec_prompts_file"] or DEFAULT_PROMPTS, self.tasks
        )
        self.dataset, self.config = dataset, config
        texts = TaskTexts(config, dataset, [""] * self.n_items)
        self.templates = {
            task: usable_templates(templates[task], texts.available(task in ROW_TASKS), task)
            for task in self.tasks
        }
        self.eval_template = templates["seqrec"][config["eval_prompt_index"]]
        self.history_length = config["prompt_history_length"]
        self.max_prompt_tokens = config["max_prompt_tokens"]
        self.num_beams = config["num_beams"]
        self.generation_batch_size = config["generation_batch_size"]
        self.autocast_dtype = config["mixed_precision"]
        self.template_generator = torch.Generator().manual_seed(config["seed"] + rank())
        # item tasks: every item once per epoch, spread over the steps in seeded slices
        self.items_per_step = math.ceil(
            (self.n_items - 1) * config["train_batch_size"] / len(dataset)
        )
        self.item_order, self.item_cursor, self.item_passes = None, 0, 0

    # ----- the index: codes, their texts, the trie --------------------------------------------
    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._views = None  # the loaded checkpoint's codes replace the ones built at init

    def views(self):
        """``(texts, trie)`` of the current ``item_codes``: each item's index tokens as text, and
        the trie constrained generation walks."""
        if self._views is None:
            codes = self.item_codes.cpu()
            code_texts = [""] + [
                "".join(index_token(level, int(v)) for level, v in enumerate(row))
                for row in codes[1:]
            ]
            texts = TaskTexts(self.config, self.dataset, code_texts)
            self._views = (texts, IndexTrie(codes, self.codebook_sizes))
        texts, trie = self._views
        return texts, trie.to(self.item_codes.device)

    def index_ids(self, items):
        """``[len(items), levels]`` vocabulary ids of ``items``' index tokens."""
        codes = self.item_codes[items].cpu()
        return torch.stack(
            [self.level_tokens[level][codes[:, level]] for level in range(codes.shape[1])], 1
        )

    # ----- examples ---------------------------------------------------------------------------
    def _histories(self, interaction):
        sequences, lengths = interaction[self.ITEM_SEQ].cpu(), interaction[self.ITEM_SEQ_LEN].cpu()
        return [s[:n].tolist()[-self.history_length :] for s, n in zip(sequences, lengths.tolist())]

    def _prompt(self, template, values):
        return fill(self.sft_template, {"instruction": fill(template["instruction"], values)})

    def _examples(self, task, items, histories=None, users=None):
        """``(prompts, responses)`` of ``task`` about ``items``: each with a template drawn from the
        seeded generator; a response that is an item's index is its token ids (exact: what
        generation produces), any other response is tokenized text."""
        texts, _ = self.views()
        templates = self.templates[task]
        drawn = torch.randint(len(templates), (len(items),), generator=self.template_generator)
        prompts, responses = [], []
        for row, (item, k) in enumerate(zip(items, drawn.tolist())):
            values = texts.values(
                item,
                None if histories is None else histories[row],
                None if users is None else users[row],
            )
            prompts.append(self._prompt(templates[k], values))
            response = templates[k]["response"]
            responses.append(
                self.index_ids([item])[0].tolist()
                if response == "{item}"
                else self.tokenizer(fill(response, values), add_special_tokens=False)["input_ids"]
            )
        return prompts, responses

    def _step_items(self):
        """This step's slice of the epoch's seeded item order for the item tasks (every rank its
        own slice; a pass over all items, then a new order)."""
        if self.item_order is None or self.item_cursor >= len(self.item_order):
            generator = torch.Generator().manual_seed(self.config["seed"] + self.item_passes)
            self.item_order = torch.randperm(self.n_items - 1, generator=generator) + 1
            self.item_cursor, self.item_passes = 0, self.item_passes + 1
        start = self.item_cursor + rank() * self.items_per_step
        processes = dist.get_world_size() if dist.is_initialized() else 1
        self.item_cursor += processes * self.items_per_step
        return self.item_order[start : start + self.items_per_step].tolist()

    def training_examples(self, interaction):
        """``(prompts, responses)`` of one step: every row task on every row, the item tasks on
        this step's slice of items."""
        histories = self._histories(interaction)
        targets = interaction[self.POS_ITEM_ID].tolist()
        users = interaction[self.USER_ID].tolist()
        prompts, responses = [], []
        step_items = self._step_items() if set(self.tasks) & set(ITEM_TASKS) else []
        for task in self.tasks:
            rows = (targets, histories, users) if task in ROW_TASKS else (step_items,)
            if rows[0]:
                task_prompts, task_responses = self._examples(task, *rows)
                prompts += task_prompts
                responses += task_responses
        return prompts, responses

    def _fit_prompt(self, prompt_ids, reserve):
        """``prompt_ids`` cut from the start (after its first token) to leave ``reserve`` tokens."""
        room = self.max_prompt_tokens - reserve
        if len(prompt_ids) <= room:
            return prompt_ids
        self.prompts_shortened += 1
        return prompt_ids[:1] + prompt_ids[len(prompt_ids) - room + 1 :]

    # ----- training ---------------------------------------------------------------------------
    def _autocast(self, device):
        dtype = self.autocast_dtype if device.type == "cuda" else None
        return torch.autocast(
            device.type, dtype=getattr(torch, dtype or "bfloat16"), enabled=dtype is not None
        )

    def calculate_loss(self, interaction):
        """Cross-entropy of the response tokens (and the closing EOS) given the prompt, over every
        example of the step; prompt and padding carry no loss (spec 4). Only the positions that
        predict a response token go through the vocabulary head: a 32k-token head over every prompt
        position would dominate the step."""
        prompts, responses = self.training_examples(interaction)
        eos = [self.tokenizer.eos_token_id]
        sequences, labels = [], []
        for prompt_ids, response in zip(self.tokenizer(prompts)["input_ids"], responses):
            prompt_ids = self._fit_prompt(prompt_ids, len(response) + 1)
            sequences.append(prompt_ids + response + eos)
            labels.append([-100] * len(prompt_ids) + response + eos)
        device = self.item_codes.device
        ids, mask, labels = (
            t.to(device) for t in padded(sequences, self.tokenizer.pad_token_id, False, labels)
        )
        targets = labels[:, 1:]
        with self._autocast(device), attention_kernels():
            hidden = self.llm.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = self.llm.get_output_embeddings()(hidden[:, :-1][targets != -100])
        return F.cross_entropy(logits.float(), targets[targets != -100])

    # ----- evaluation -------------------------------------------------------------------------
    def eval_prompts(self, interaction):
        """Left-padded ``(ids, attention_mask)`` of the evaluation seqrec prompt of every row."""
        texts, _ = self.views()
        prompts = [
            self._prompt(self.eval_template, texts.values(0, history))
            for history in self._histories(interaction)
        ]
        encoded = [
            self._fit_prompt(ids, self.item_codes.shape[1])
            for ids in self.tokenizer(prompts)["input_ids"]
        ]
        ids, mask, _ = padded(encoded, self.tokenizer.pad_token_id, True)
        return ids.to(self.item_codes.device), mask.to(self.item_codes.device)

    @torch.no_grad()
    def full_sort_predict_excluding(self, interaction, excluded):
        """``[B, n_items]``: the ``num_beams`` items of the constrained beam search get their
        index's log-likelihood, every other item -inf; ``excluded`` ([B, n_items] bool, the items
        ``eval_mask_history`` masks) are removed from each user's trie before the search."""
        _, trie = self.views()
        ids, mask = self.eval_prompts(interaction)
        scores = torch.full((len(ids), self.n_items), -torch.inf, device=ids.device)
        for chunk in torch.arange(len(ids)).split(self.generation_batch_size):
            with self._autocast(ids.device):
                items, item_scores = constrained_beam_search(
                    self.llm,
                    ids[chunk],
                    mask[chunk],
                    trie,
                    [t.to(ids.device) for t in self.level_tokens],
                    self.num_beams,
                    None if excluded is None else excluded[chunk].to(ids.device),
                )
            scores[chunk.to(ids.device).unsqueeze(1), items] = item_scores
        scores[:, 0] = -torch.inf  # the empty beam slots hold item 0
        return scores

    def full_sort_predict(self, interaction):
        return self.full_sort_predict_excluding(interaction, None)

    @torch.no_grad()
    def predict(self, interaction):
        """Each row's candidate (``ITEM_ID``) scored by the log-likelihood of its index after the
        user's prompt, batched: one prompt per user, all its candidates together (spec 5)."""
        first_row, group = rows_by_user(interaction, self.USER_ID)
        ids, mask = self.eval_prompts(interaction[first_row])
        candidates = interaction[self.ITEM_ID]
        # each row's place among its user's candidates
        order = torch.argsort(group, stable=True)
        starts = torch.cumsum(torch.bincount(group), 0) - torch.bincount(group)
        slot = torch.empty_like(group)
        slot[order] = torch.arange(len(group), device=group.device) - starts[group[order]]
        grid = torch.ones(
            len(first_row), int(slot.max()) + 1, dtype=torch.long, device=group.device
        )
        grid[group, slot] = candidates
        with self._autocast(ids.device):
            likelihoods = code_log_likelihoods(
                self.llm,
                ids,
                mask,
                self.item_codes[grid],
                [t.to(ids.device) for t in self.level_tokens],
            )
        return likelihoods[group, slot]
