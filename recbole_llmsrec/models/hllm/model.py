"""HLLM (ByteDance, "Hierarchical Large Language Model"; code bytedance/HLLM) as a RecBole model.

Item LLM: ``item_prompt`` + ``name: value`` fields (cut to ``max_text_length`` tokens) + a learnable
[ITEM] input vector, whose last hidden state is the item embedding. User LLM: a causal decoder fed
the item embeddings (via a linear adapter if sizes differ); each position predicts the next item
(spec ``hllm.md`` 1-3). Loss: InfoNCE, learnable temperature, ``num_negatives`` uniform items per
step shared by all positions.

Departures (spec section 7; README "HLLM"): fields joined by ``item_text_separator`` (the original
wrote "title: Xdescription: Y"); only real items are encoded, each distinct item of a step once (the
original also encoded random padding items); float32 logits and scores; windows of
``MAX_ITEM_LIST_LENGTH`` transitions make every training interaction a target once (the original's
chunking dropped some); ``clip_grad_norm`` is applied (the original read it and never used it)."""

import hashlib
import math

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn

from recbole_llmsrec.data.item_text import build_item_texts
from recbole_llmsrec.distribution.process_group import is_distributed, rank, wait_for_rank0
from recbole_llmsrec.distribution.training import same_forward_count
from recbole_llmsrec.hooks import ModelHooks
from recbole_llmsrec.llm.embedding_cache import cached_item_embeddings, encoder_identity
from recbole_llmsrec.llm.layers import ItemMatrixPerEvaluation
from recbole_llmsrec.llm.loading import attention_kernels, load_llm_from_config, require_causal
from recbole_llmsrec.models.hllm.packed_attention import packed_forward, use_packed_attention
from recbole_llmsrec.settings import require_at_least


def info_nce_loss(user, positive, negatives, logit_scale, threshold):
    """InfoNCE of ``user`` [P, D] against its ``positive`` [P, D] and shared ``negatives`` [K, D],
    in float32 on L2-normalised vectors, logits scaled by ``exp(logit_scale)``; a negative whose
    cosine to the positive exceeds ``threshold`` (a near-duplicate of the target) is masked (spec
    3)."""
    user, positive, negatives = (
        F.normalize(x.float(), dim=-1) for x in (user, positive, negatives)
    )
    positive_logit = (user * positive).sum(-1, keepdim=True)
    logits = torch.cat([positive_logit, user @ negatives.T], dim=1) * logit_scale.float().exp()
    near_duplicate = F.pad(positive @ negatives.T > threshold, (1, 0), value=False)
    logits = logits.masked_fill(near_duplicate, -torch.inf)  # after scaling: no inf * 0 in backward
    return F.cross_entropy(logits, torch.zeros(len(user), dtype=torch.long, device=user.device))


class HLLM(ItemMatrixPerEvaluation, ModelHooks, SequentialRecommender):
    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.item_llm_frozen = bool(config["freeze_item_llm"])
        self.item_llm, self.tokenizer = load_llm_from_config(
            config, prefix="item_llm", kind="base", frozen=self.item_llm_frozen
        )
        use_packed_attention(self.item_llm)
        self.user_llm, _ = load_llm_from_config(
            config, prefix="user_llm", kind="base", with_tokenizer=False
        )
        # each position predicts the next item: a User LLM that looks ahead would see its targets
        require_causal(self.user_llm, "user_llm_path")
        # it reads item embeddings, never tokens: a trainable token table without gradient stalls
        # DDP
        self.user_llm.get_input_embeddings().requires_grad_(False)
        item_size = self.item_llm.get_input_embeddings().embedding_dim
        user_size = self.user_llm.get_input_embeddings().embedding_dim
        self.adapter = nn.Identity() if item_size == user_size else nn.Linear(item_size, user_size)
        self.item_token = nn.Parameter(
            torch.randn(item_size) * 0.02, requires_grad=not self.item_llm_frozen
        )
        # shape [1], not a scalar: FSDP shards no 0-d parameter
        self.logit_scale = nn.Parameter(torch.tensor([math.log(1 / config["temperature_init"])]))
        self.max_logit_scale = math.log(1 / config["temperature_min"])
        self.after_optimizer_step()
        self.num_negatives = require_at_least(config, "num_negatives", 1)
        self.nce_threshold = config["nce_threshold"]
        self.item_encode_tokens = require_at_least(config, "item_encode_tokens", 1)
        self.pack_item_texts = config["item_encode_packed"]
        self.autocast_dtype = config["mixed_precision"]

        self.item_texts = [config["item_prompt"] + t for t in build_item_texts(dataset, config)[1:]]
        encoded = self.tokenizer(
            self.item_texts, truncation=True, max_length=config["max_text_length"]
        )["input_ids"]
        self.item_token_ids = [[]] + encoded  # padding item 0 is never encoded
        self.config = config
        self._frozen_table = None
        # negatives are drawn per rank, as in the original (one process: seed + 0)
        self.negative_generator = torch.Generator().manual_seed(config["seed"] + rank())
        self.items_encoded = 0  # rows through the Item LLM, to check each distinct item runs once

    def _compute_dtype(self, device):
        """The autocast dtype on ``device`` (``mixed_precision``, on CUDA only), or None."""
        return (
            getattr(torch, self.autocast_dtype)
            if device.type == "cuda" and self.autocast_dtype
            else None
        )

    def _autocast(self, device):
        dtype = self._compute_dtype(device)
        return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def packs_texts(self, device):
        """``item_encode_packed``; by default on CUDA in half precision only: flash has no fp32
        kernel, and the fp32 fallback's dense mask over a whole pack could exhaust memory."""
        if self.pack_item_texts is not None:
            return bool(self.pack_item_texts)
        half = self._compute_dtype(device) or self.item_llm.dtype in (torch.bfloat16, torch.float16)
        return device.type == "cuda" and bool(half)

    def train(self, mode=True):
        super().train(mode)
        # a frozen Item LLM stays in eval mode: the item table it caches is never dropout-noised
        if self.item_llm_frozen:
            self.item_llm.eval()
        return self

    # ----- Item LLM ---------------------------------------------------------------------------
    def token_budget_batches(self, items):
        """``items`` by token length in batches of <= ``item_encode_tokens`` tokens (text + [ITEM],
        padded to the batch's longest); a longer text is a batch alone."""
        batches, size = [], lambda item: len(self.item_token_ids[item]) + 1
        for item in sorted(items, key=size):
            if not batches or (len(batches[-1]) + 1) * size(item) > self.item_encode_tokens:
                batches.append([])
            batches[-1].append(item)
        return batches

    def _encode_batch(self, items):
        """[ITEM] states of ``items``: packed on CUDA (varlen attention), else padded (tests'
        reference)."""
        device = self.item_token.device
        # built on the host and copied once: no per-text copy or device sync
        texts = [torch.tensor(self.item_token_ids[i] + [0]) for i in items]  # + the [ITEM] slot
        self.items_encoded += len(items)
        if self.packs_texts(device):
            lengths = [len(t) for t in texts]
            embeds = self.item_llm.get_input_embeddings()(
                torch.cat(texts).to(device, non_blocking=True)
            )
            item_slot = torch.tensor(lengths).cumsum(0).to(device, non_blocking=True) - 1
            embeds = embeds.index_put(
                (item_slot,), self.item_token.to(embeds.dtype).expand(len(items), -1)
            )
            return packed_forward(self.item_llm, embeds, lengths)[item_slot].float()
        ids = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True).to(device, non_blocking=True)
        lengths = torch.tensor([len(t) - 1 for t in texts]).to(device, non_blocking=True)
        positions = torch.arange(ids.shape[1], device=device)
        mask = (positions.unsqueeze(0) <= lengths.unsqueeze(1)).long()  # text + [ITEM]
        item_slot = positions.unsqueeze(0) == lengths.unsqueeze(1)
        embeds = self.item_llm.get_input_embeddings()(ids)
        embeds = torch.where(item_slot.unsqueeze(-1), self.item_token.to(embeds.dtype), embeds)
        with attention_kernels():
            hidden = self.item_llm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return hidden[item_slot].float()

    def frozen_item_table(self):
        """``freeze_item_llm``: Item LLM and [ITEM] never change; each item embedded once, cached on
        disk."""
        if self._frozen_table is None:
            config = self.config
            token = hashlib.sha256(
                self.item_token.detach().float().cpu().numpy().tobytes()
            ).hexdigest()
            identity = (
                f"{encoder_identity(self.item_llm, config['item_llm_path'])}|[ITEM] {token}"
                f"|max_text_length {config['max_text_length']}"  # bf16 and fp32 tables differ:
                f"|autocast {self._compute_dtype(self.item_token.device)}"
            )
            item_of_text = {text: item for item, text in enumerate(self.item_texts, 1)}
            batches = self.token_budget_batches(range(1, len(self.item_texts) + 1))
            rows = [[item - 1 for item in batch] for batch in batches]

            def cached_table():
                with self._autocast(self.item_token.device):
                    return cached_item_embeddings(
                        self.item_texts,
                        lambda texts: self._encode_batch([item_of_text[t] for t in texts]),
                        cache_dir=config["checkpoint_dir"],
                        encoder_id=identity,
                        template=config["item_prompt"] + config["item_text_template"],
                        batches=rows,
                        show_progress=config["show_progress"],
                    )

            table = cached_table() if rank() == 0 else None  # rank 0 fills the cache once;
            if is_distributed(config):
                wait_for_rank0()  # the other ranks wait for it (one process: no-op), then read it
            table = cached_table() if table is None else table
            self._frozen_table = torch.cat([torch.zeros_like(table[:1]), table]).to(
                self.item_token.device
            )
        return self._frozen_table.to(self.item_token.device)

    def encode_items(self, items):
        """Item embeddings (in the User LLM's space) of distinct ``items``, ``[len(items), D]``."""
        if not self.item_token.requires_grad:  # frozen Item LLM: no forward, read the cached table
            return self._to_user_space(self.frozen_item_table()[items])
        items = items.tolist()
        batches, fillers = same_forward_count(self.token_budget_batches(items), [1], self.config)
        by_item, filler_anchor = {}, 0.0
        for index, batch in enumerate(batches):
            encoded = self._encode_batch(batch)
            if index < len(batches) - fillers:
                by_item.update(zip(batch, encoded))
            else:  # FSDP: a forward only to match the other ranks' count; its backward must run too
                filler_anchor = filler_anchor + 0.0 * encoded.sum()
        encoded = torch.stack([by_item[i] for i in items])
        return self._to_user_space(encoded + filler_anchor if fillers else encoded)

    def _to_user_space(self, item_embeddings):
        with torch.autocast(item_embeddings.device.type, enabled=False):  # the adapter in float32
            return self.adapter(item_embeddings.float())

    # ----- User LLM ---------------------------------------------------------------------------
    def _user_states(self, item_embeddings, mask):
        with attention_kernels():
            return self.user_llm(
                inputs_embeds=item_embeddings.to(self.user_llm.dtype), attention_mask=mask.long()
            ).last_hidden_state.float()

    @torch.no_grad()
    def after_optimizer_step(self):
        """Temperature in [temperature_min, 1], clamped at start and after each step (the original:
        before each forward): every forward sees one value; FSDP changes the stored shard, not a
        forward's copy."""
        self.logit_scale.clamp_(0, self.max_logit_scale)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        scale = state_dict.get(prefix + "logit_scale")
        if scale is not None and scale.dim() == 0:  # a checkpoint from before it had shape [1]
            state_dict[prefix + "logit_scale"] = scale.view(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def calculate_loss(self, interaction):
        """ONE autocast region per step: fp32 weights are cast once, not per Item LLM batch
        (autocast drops its cast cache when the outermost region closes)."""
        with self._autocast(interaction[self.ITEM_SEQ].device):
            return self._next_item_loss(interaction)

    def _next_item_loss(self, interaction):
        item_seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        rows = torch.arange(len(item_seq), device=item_seq.device)
        sequence = torch.cat([item_seq, torch.zeros_like(item_seq[:, :1])], dim=1)
        sequence[rows, lengths] = interaction[self.POS_ITEM_ID]  # history + target
        negatives = torch.randint(
            1, self.n_items, (self.num_negatives,), generator=self.negative_generator
        ).to(item_seq.device)

        distinct, where = torch.unique(
            torch.cat([sequence.flatten(), negatives]), return_inverse=True
        )
        real = distinct > 0
        embeddings = torch.zeros(
            len(distinct),
            self.user_llm.get_input_embeddings().embedding_dim,
            device=item_seq.device,
        )
        embeddings[real] = self.encode_items(distinct[real])  # each distinct item once
        sequence_emb = embeddings[where[: sequence.numel()]].view(*sequence.shape, -1)
        negative_emb = embeddings[where[sequence.numel() :]]

        states = self._user_states(sequence_emb[:, :-1], sequence[:, :-1] > 0)
        valid = sequence[:, 1:] > 0  # positions with a next item
        return info_nce_loss(
            states[valid],
            sequence_emb[:, 1:][valid],
            negative_emb,
            self.logit_scale,
            self.nce_threshold,
        )

    # ----- evaluation -------------------------------------------------------------------------
    def item_embedding_device(self):
        return self.item_token.device

    def compute_item_matrix(self, items):
        with self._autocast(items.device):
            return self.encode_items(items)

    @torch.no_grad()
    def user_vectors(self, interaction):
        item_seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        item_matrix = self.item_matrix()
        with self._autocast(item_seq.device):
            states = self._user_states(item_matrix[item_seq], item_seq > 0)
        return F.normalize(states[torch.arange(len(item_seq)), lengths - 1], dim=-1)

    def full_sort_predict(self, interaction):
        return self.user_vectors(interaction) @ F.normalize(self.item_matrix(), dim=-1).T

    def predict(self, interaction):
        items = F.normalize(self.item_matrix()[interaction[self.ITEM_ID]], dim=-1)
        return (self.user_vectors(interaction) * items).sum(-1)
