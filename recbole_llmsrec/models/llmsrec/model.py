"""LLM-SRec ("Lost in Sequence", KDD'25; code Sein-Kim/LLM-SRec) as a RecBole sequential
recommender.

A frozen LLM reads a prompt with the user's last ``history_max_items`` items, each followed by a
``[HistoryEmb]`` soft token (a frozen SASRec's projected item embedding); the last-layer state at
``[UserOut]`` is the user vector, an item prompt's ``[ItemOut]`` state the item vector, and SASRec's
user representation is distilled into the LLM's (spec ``llmsrec.md`` 2-5). Only ``item_emb_proj``,
the two output-token vectors and the three heads train.

Departures (spec section 10; README "LLMSRec" has the rest): bare decoder with an attention mask
(the original computed vocabulary logits for nothing and had no mask); the embedding matrix is not
resized; negatives exclude the history AND the target (the original could draw the target), are
distinct and seeded; the teacher runs in eval mode (the original left its dropout on); int8 loading
not reproduced."""

import time

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from recbole_llmsrec.data.item_text import (
    build_item_titles,
    truncate_to_tokens,
    without_special_tokens,
)
from recbole_llmsrec.llm.layers import (
    ItemMatrixPerEvaluation,
    in_length_order,
    projection_mlp,
    rows_by_user,
)
from recbole_llmsrec.llm.loading import attention_kernels, cache_keyword
from recbole_llmsrec.models.cf_teacher.model import LLMWithCFTeacher
from recbole_llmsrec.settings import require_at_least

HISTORY_TOKEN, USER_OUT_TOKEN, ITEM_OUT_TOKEN = "[HistoryEmb]", "[UserOut]", "[ItemOut]"
_SPLIT = "\x00"  # marks where a template's variable part starts, to find its fixed prefix


def uniformity(x):
    """Mean over pairs of exp(-2 ||xi - xj||^2) (spec 5: no log, unlike Wang & Isola)."""
    if len(x) < 2:
        return x.new_zeros(())
    return torch.pdist(x, p=2).pow(2).mul(-2).exp().mean()


def distillation_loss(user_llm, user_cf, uniformity_weight=1.0):
    """MSE(normalize(u_LLM), normalize(u_CF)) + w * (uniformity(u_LLM) + uniformity(u_CF)) (spec
    5)."""
    user_llm, user_cf = F.normalize(user_llm, dim=-1), F.normalize(user_cf, dim=-1)
    return F.mse_loss(user_llm, user_cf) + uniformity_weight * (
        uniformity(user_llm) + uniformity(user_cf)
    )


class LLMSRec(ItemMatrixPerEvaluation, LLMWithCFTeacher):
    soft_tokens = (HISTORY_TOKEN, USER_OUT_TOKEN, ITEM_OUT_TOKEN)
    llm_kind = "base"  # the bare decoder: no vocabulary logits

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.register_buffer("cf_teacher_ready", torch.tensor(self.cf_teacher_loaded))
        if self.tokenizer.pad_token is None:
            # masked out; only batching needs one
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.history_token_id, self.user_out_id, self.item_out_id = self.soft_token_ids

        llm_size, cf_size = self.llm.config.hidden_size, self.cf_model.item_embedding.embedding_dim
        mlp_size, repr_size = config["projection_hidden_size"], config["representation_size"]
        self.item_emb_proj = projection_mlp(cf_size, llm_size, llm_size, nn.LeakyReLU())
        self.pred_user = projection_mlp(llm_size, mlp_size, repr_size, nn.LeakyReLU())
        self.pred_item = projection_mlp(llm_size, mlp_size, repr_size, nn.LeakyReLU())
        self.pred_user_cf = projection_mlp(cf_size, repr_size, repr_size, nn.GELU())
        embed = self.llm.get_input_embeddings().weight.float()
        mean, std = embed.mean().item(), embed.std().item()
        self.user_out_embedding = nn.Parameter(torch.randn(llm_size) * std + mean)
        self.item_out_embedding = nn.Parameter(torch.randn(llm_size) * std + mean)

        self.num_negatives = require_at_least(config, "train_negatives", 1)
        self.uniformity_weight = config["uniformity_weight"]
        self.distill_weight = config["distill_weight"]
        self.llm_eval_batch_size = config["llm_eval_batch_size"]
        self.use_prefix_cache = config["prefix_kv_cache"]
        self.user_template = config["user_prompt_template"].replace(
            "{interaction_word}", config["interaction_word"]
        )
        self.item_template = config["item_prompt_template"]
        self._check_templates()
        self.titles = self._titles(config, dataset)
        # title lengths in tokens, to batch prompts of similar length (item 0, padding, counts 0)
        title_ids = self.tokenizer(self.titles[1:])["input_ids"]
        self.title_tokens = torch.tensor([0] + [len(ids) for ids in title_ids])
        # a user prompt is cut to the LLM's context, oldest history items first (_user_prompts)
        self.template_tokens = len(self.tokenizer(self.user_template)["input_ids"])
        self.time_list_field = self._time_list_field(config, dataset)
        self.time_scale = {"s": 1.0, "ms": 1e-3}[config["time_field_unit"]]
        self._prefix_kv = {}

    # ----- set-up -----------------------------------------------------------------------------
    def _check_templates(self):
        for name, template, needed in (
            ("user_prompt_template", self.user_template, ("{history}", USER_OUT_TOKEN)),
            (
                "item_prompt_template",
                self.item_template,
                ("{title}", HISTORY_TOKEN, ITEM_OUT_TOKEN),
            ),
        ):
            missing = [part for part in needed if part not in template]
            if missing:
                raise ValueError(f"{name} must contain {list(needed)}; missing {missing}.")

    def _titles(self, config, dataset):
        texts = without_special_tokens(
            build_item_titles(dataset, config), (HISTORY_TOKEN, USER_OUT_TOKEN, ITEM_OUT_TOKEN)
        )
        return truncate_to_tokens(texts, self.tokenizer, config["max_title_tokens"])

    def _time_list_field(self, config, dataset):
        time_field = dataset.time_field
        if (
            not config["history_show_time"]
            or time_field is None
            or time_field not in dataset.field2type
        ):
            return None  # off, or the dataset has no time column: no dates in the prompt
        if config["normalize_all"] or time_field in (config["normalize_field"] or []):
            raise ValueError(
                f"history_show_time needs raw timestamps, but {time_field} is normalised: "
                "set normalize_all: False (or drop it from normalize_field)."
            )
        return time_field + config["LIST_SUFFIX"]

    def mark_cf_teacher_ready(self):
        self.cf_teacher_ready.fill_(True)

    # ----- prompts ----------------------------------------------------------------------------
    def _date(self, timestamp):
        return time.strftime("%Y-%m-%d", time.gmtime(timestamp * self.time_scale))

    def _user_prompts(self, interaction):
        """Prompts of a batch of users and their history items (row-major, as the slots appear)."""
        item_seq, lengths = (
            interaction[self.ITEM_SEQ].tolist(),
            interaction[self.ITEM_SEQ_LEN].tolist(),
        )
        times = interaction[self.time_list_field].tolist() if self.time_list_field else None
        prompts, history = [], []
        for row, (seq, length) in enumerate(zip(item_seq, lengths)):
            first = start = max(0, length - self.history_max_items)
            prompt = self._user_prompt(seq, times[row] if times else None, start, length)
            while start < length - 1 and self._too_long(prompt, seq[start:length]):
                start += 1  # the oldest history item goes first; the instruction always stays
                prompt = self._user_prompt(seq, times[row] if times else None, start, length)
            if start > first:
                self.note_prompt_cut("the instruction")
            history.extend(seq[start:length])
            prompts.append(prompt)
        return prompts, history

    def _user_prompt(self, seq, times, start, length):
        parts = []
        for k, position in enumerate(range(start, length), 1):
            date = f"Time: {self._date(times[position])}, " if times else ""
            parts.append(f'Item No.{k}, {date}"{self.titles[seq[position]]}"{HISTORY_TOKEN}')
        return self.user_template.replace("{history}", ",".join(parts))

    def _too_long(self, prompt, items):
        """Whether ``prompt`` has more tokens than the LLM's context (``context_length``); tokenized
        only when an upper bound from the titles' lengths says it might."""
        bound = self.template_tokens + int(self.title_tokens[items].sum()) + 24 * len(items)
        if bound <= self.max_prompt_tokens:
            return False
        return len(self.tokenizer(prompt)["input_ids"]) > self.max_prompt_tokens

    def _item_prompts(self, items):
        return [self.item_template.replace("{title}", self.titles[i]) for i in items.tolist()]

    # ----- LLM forward ------------------------------------------------------------------------
    def _prefix_ids(self, kind):
        """Token ids every ``kind`` prompt starts with (less the fixed text's last: it may merge
        onward)."""
        template = self.user_template if kind == "user" else self.item_template
        fixed = template.replace("{history}", _SPLIT).replace("{title}", _SPLIT).split(_SPLIT)[0]
        return self.tokenizer(fixed)["input_ids"][:-1]

    def _prefix_cache(self, kind, batch_size, device):
        key = (kind, device, self.llm.dtype)
        if key not in self._prefix_kv:
            ids = torch.tensor([self._prefix_ids(kind)], device=device)
            with torch.no_grad(), attention_kernels():
                output = self.llm(input_ids=ids, use_cache=True)
                cache = getattr(output, cache_keyword(self.llm))
            self._prefix_kv[key] = (ids[0], [(layer.keys, layer.values) for layer in cache.layers])
        ids, layers = self._prefix_kv[key]
        cache = DynamicCache(config=self.llm.config)
        for index, (keys, values) in enumerate(layers):
            cache.update(
                keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1), index
            )
        return ids, cache

    def _can_use_prefix_cache(self):
        # checkpointed layers re-run in backward and would append to the cache a second time
        return self.use_prefix_cache and not (self.llm_checkpointing and torch.is_grad_enabled())

    def _llm_states(
        self, prompts, history_items, out_token_id, out_embedding, kind, use_prefix_cache
    ):
        """Last-layer hidden state at the output token of each prompt, float32 ``[len(prompts),
        H]``."""
        device = out_embedding.device
        batch = self.tokenizer(prompts, padding=True, return_tensors="pt").to(device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        history_slots, out_slots = ids == self.history_token_id, ids == out_token_id
        self.check_soft_token_slots(
            history_slots.sum().item() == len(history_items) and bool((out_slots.sum(1) == 1).all())
        )
        embedding = self.llm.get_input_embeddings()
        embeds = embedding(ids.masked_fill(history_slots | out_slots, self.tokenizer.pad_token_id))
        projected = self.item_emb_proj(
            self.cf_model.item_embedding(
                torch.as_tensor(history_items, dtype=torch.long, device=device)
            )
        )
        embeds = embeds.masked_scatter(history_slots.unsqueeze(-1), projected.to(embeds.dtype))
        embeds = torch.where(out_slots.unsqueeze(-1), out_embedding.to(embeds.dtype), embeds)

        start, cache = 0, None
        if use_prefix_cache and self._can_use_prefix_cache():
            prefix, cache = self._prefix_cache(kind, len(prompts), device)
            if torch.equal(ids[:, : len(prefix)], prefix.expand(len(prompts), -1)):
                start = len(prefix)
            else:
                cache = None  # tokenization differs at the boundary: run the plain path
        with attention_kernels():
            hidden = self.llm(
                inputs_embeds=embeds[:, start:],
                attention_mask=mask,
                use_cache=cache is not None,
                **{cache_keyword(self.llm): cache},
            ).last_hidden_state
        return hidden[out_slots[:, start:]].float()

    def _user_states(self, interaction, use_prefix_cache=True):
        prompts, history = self._user_prompts(interaction)
        return self._llm_states(
            prompts, history, self.user_out_id, self.user_out_embedding, "user", use_prefix_cache
        )

    def _item_states(self, items, use_prefix_cache=True):
        return self._llm_states(
            self._item_prompts(items),
            items.tolist(),
            self.item_out_id,
            self.item_out_embedding,
            "item",
            use_prefix_cache,
        )

    def user_representation(self, interaction, use_prefix_cache=True):
        return self.pred_user(self._user_states(interaction, use_prefix_cache))

    def item_representation(self, items, use_prefix_cache=True):
        return self.pred_item(self._item_states(items, use_prefix_cache))

    # ----- training ---------------------------------------------------------------------------
    def calculate_loss(self, interaction):
        target = interaction[self.POS_ITEM_ID]
        user = self.user_representation(interaction)

        negatives = self.sample_negatives(interaction[self.USER_ID])
        candidates = torch.cat([target.unsqueeze(1), negatives], dim=1)
        distinct, where = torch.unique(candidates, return_inverse=True)  # each item encoded once
        items = self._items_in_length_order(distinct)[where]
        logits = torch.einsum("bd,bcd->bc", user, items)
        rec_loss = F.cross_entropy(logits, torch.zeros_like(target))

        with torch.no_grad():
            teacher_user = self.teacher_users(interaction)
        distill = distillation_loss(user, self.pred_user_cf(teacher_user), self.uniformity_weight)
        return rec_loss, self.distill_weight * distill

    # ----- evaluation -------------------------------------------------------------------------
    def item_embedding_device(self):
        return self.user_out_embedding.device

    def _items_in_length_order(self, items):
        """Item representations, ``llm_eval_batch_size`` prompts of similar length per forward."""
        return in_length_order(
            self.item_representation,
            items,
            self.title_tokens[items.cpu()],
            self.llm_eval_batch_size,
        )

    def compute_item_matrix(self, items):
        return self._items_in_length_order(items)

    @torch.no_grad()
    def _eval_users(self, interaction):
        """``llm_eval_batch_size`` users per forward, batched by prompt length (history titles'
        tokens)."""
        seq, length = (
            interaction[self.ITEM_SEQ].cpu(),
            interaction[self.ITEM_SEQ_LEN].cpu().unsqueeze(1),
        )
        position = torch.arange(seq.shape[1])
        shown = (position >= length - self.history_max_items) & (position < length)
        return in_length_order(
            self.user_representation,
            interaction,
            (self.title_tokens[seq] * shown).sum(1),
            self.llm_eval_batch_size,
        )

    def full_sort_predict(self, interaction):
        return self._eval_users(interaction) @ self.item_matrix().T

    def predict(self, interaction):
        # sampled evaluation repeats each user once per candidate: encode each distinct user once
        first_row, user = rows_by_user(
            interaction, self.ITEM_SEQ, self.ITEM_SEQ_LEN, self.time_list_field
        )
        users = self._eval_users(interaction[first_row])[user]
        return (users * self.item_matrix()[interaction[self.ITEM_ID]]).sum(-1)
