"""A-LLMRec (KDD'24; code ghdtjr/A-LLMRec) as a RecBole sequential recommender (spec
``allmrec.md``).

Stage 0: a frozen RecBole teacher (``cf_model``, SASRec by default). Stage 1 (``stage1_loss``): an
item auto-encoder on its item embeddings aligned with a text auto-encoder on a fine-tuned
Sentence-BERT text embedding. Stage 2 (``calculate_loss``): the teacher's user state and the item
latents as soft tokens of a frozen causal LLM's prompt (history and candidates); LM loss on the
quoted target title + EOS. ``ALLMRecTrainer`` runs the stages. Ranking (the original only generates
text; README "ALLMRec"): ``predict`` scores candidates by the log-likelihood of ``"title"</s>``
after the prompt; ``full_sort_predict`` reranks the stage-1 head's top ``rerank_k`` items (of those
the protocol does not exclude) with it, above every other item.

Bugs of the original avoided (spec section 7): SASRec dropout stays off; negatives are seeded,
distinct and outside the user's whole training history (never the target); the candidate order
ignores which candidate is the target; the stage-1 data is shuffled; one optimizer step per
batch."""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_llmsrec.data.item_text import (
    build_item_texts,
    build_item_titles,
    without_special_tokens,
)
from recbole_llmsrec.llm.layers import projection_mlp, rows_by_user
from recbole_llmsrec.llm.loading import attention_kernels
from recbole_llmsrec.models.allmrec.ranking import (
    answer_log_likelihoods,
    answer_trie,
    pad_with_answers,
    prompts_with_tries,
)
from recbole_llmsrec.models.allmrec.stage1 import AlignmentStage, AutoEncoder
from recbole_llmsrec.models.cf_teacher.model import LLMWithCFTeacher
from recbole_llmsrec.settings import require_at_least

USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN = "[UserRep]", "[HistoryEmb]", "[CandidateEmb]"


class ALLMRec(AlignmentStage, LLMWithCFTeacher):
    soft_tokens = (USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN)
    llm_kind = "causal_lm"  # it scores and generates answers token by token
    # full_sort_predict is retrieve-then-rerank: sampled evaluation must call predict (LLM scores)
    sampled_scores_from_full_sort = False
    # the LLM comes from llm_path; the text side is only used by stage 1 and discarded after (spec
    # 2)
    unsaved_prefixes = ("llm.", "text_encoder.", "text_autoencoder.")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.register_buffer("stage_done", torch.tensor([self.cf_teacher_loaded, False]))  # 0 and 1
        cf_size = self.cf_model.item_embedding.embedding_dim
        self.item_autoencoder = AutoEncoder(cf_size, config["alignment_size"])
        self.text_encoder = self.text_tokenizer = self.text_autoencoder = None
        self.user_token_id, self.history_token_id, self.candidate_token_id = self.soft_token_ids
        self.eos_token_id = self.tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise ValueError(
                f"the tokenizer of llm_path={config['llm_path']} has no EOS token: the stage-2 "
                "target is the quoted title followed by EOS."
            )
        llm_size = self.llm.get_input_embeddings().embedding_dim
        self.user_proj = projection_mlp(cf_size, llm_size, llm_size, nn.LeakyReLU())  # log_emb_proj
        self.item_proj = projection_mlp(config["alignment_size"], llm_size, llm_size, nn.GELU())
        self.titles = without_special_tokens(build_item_titles(dataset, config), self.soft_tokens)
        self.texts = [
            config["alignment_text_template"].replace("{text}", t)
            for t in build_item_texts(dataset, config)
        ]
        self.prompt_template = template = config["prompt_template"]
        if "{history}" not in template or "{candidates}" not in template:
            raise ValueError("prompt_template must contain {history} and {candidates}.")
        self.num_candidates = require_at_least(config, "num_candidates", 2)
        self.rerank_k = config["rerank_k"]
        self.rank_batch_size = require_at_least(config, "rank_batch_size", 1)
        self.rank_projection_rows = require_at_least(config, "rank_projection_rows", 1)
        self.seed = config["seed"]
        self._title_token_cache = {}

    # ----- stages -----------------------------------------------------------------------------
    def load_state_dict(self, state_dict, strict=True, assign=False):
        # a RecBole --checkpoint of stage 2 restores stage_done = [True, True]: freeze its item
        # encoder
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._freeze_finished_stages()
        return result

    def _freeze_finished_stages(self):
        """The one place the item encoder's trainability is set: it trains in stage 1 only."""
        self.item_autoencoder.requires_grad_(not bool(self.stage_done[1]))

    def mark_cf_teacher_ready(self):
        self.stage_done[0] = True

    @property
    def cf_teacher_ready(self):
        return self.stage_done[0]

    def _device(self):
        return self.user_proj[0].weight.device

    # ----- stage 2: prompts with soft tokens -------------------------------------------------
    def _title_tokens(self, item):
        """Token ids of ``"title"`` + EOS (no BOS), the stage-2 target of an item."""
        if item not in self._title_token_cache:
            ids = self.tokenizer(f'"{self.titles[item]}"', add_special_tokens=False)["input_ids"]
            self._title_token_cache[item] = ids + [self.eos_token_id]
        return self._title_token_cache[item]

    def _prompt_ids(self, history, candidates):
        text = self.prompt_template.replace(
            "{history}", ",".join(f'"{self.titles[i]}"{HISTORY_TOKEN}' for i in history)
        ).replace(
            "{candidates}", ",".join(f'"{self.titles[i]}"{CANDIDATE_TOKEN}' for i in candidates)
        )
        # the user's soft token goes first, before BOS, as in the original
        return [self.user_token_id] + self.tokenizer(text)["input_ids"]

    def _fitted_prompt(self, history, candidates, answer_tokens):
        """``(prompt ids, history kept)``: the prompt with room for ``answer_tokens`` more tokens
        inside the LLM's context (``context_length``), its oldest history items left out first; the
        instruction and the candidates always stay (counted in ``prompts_shortened``, warned about
        once)."""
        ids, start = self._prompt_ids(history, candidates), 0
        while len(ids) + answer_tokens > self.max_prompt_tokens and start < len(history):
            start += 1
            ids = self._prompt_ids(history[start:], candidates)
        if start:
            self.note_prompt_cut("the instruction and the candidates")
        return ids, history[start:]

    def _history(self, interaction):
        seqs, lengths = interaction[self.ITEM_SEQ].tolist(), interaction[self.ITEM_SEQ_LEN].tolist()
        return [seq[max(0, n - self.history_max_items) : n] for seq, n in zip(seqs, lengths)]

    def _embed(self, ids, users, slot_items):
        """Input embeddings of ``ids`` [B, T] with the soft tokens of ``users`` [B, d] (SASRec
        states) and ``slot_items`` (item ids of every history/candidate slot, in the order the slots
        appear) put in."""
        user_slots = ids == self.user_token_id
        item_slots = (ids == self.history_token_id) | (ids == self.candidate_token_id)
        self.check_soft_token_slots(
            item_slots.sum().item() == len(slot_items) and bool((user_slots.sum(1) == 1).all())
        )
        embeds = self.llm.get_input_embeddings()(
            ids.masked_fill(user_slots | item_slots, self.eos_token_id)
        )
        item_ids = torch.as_tensor(slot_items, dtype=torch.long, device=ids.device)
        latent, _ = self.item_autoencoder(self.cf_model.item_embedding(item_ids))
        embeds = embeds.masked_scatter(
            item_slots.unsqueeze(-1), self.item_proj(latent).to(embeds.dtype)
        )
        return embeds.masked_scatter(
            user_slots.unsqueeze(-1), self.user_proj(users).to(embeds.dtype)
        )

    def candidate_order(self, items):
        """A fixed pseudo-random order of a user's candidates that ignores which one is the
        target."""
        keys = (torch.as_tensor(items) * 2654435761 + self.seed) % 2147483647
        return [items[i] for i in torch.argsort(keys).tolist()]

    def calculate_loss(self, interaction):
        """Stage 2: LM loss on ``"target title"</s>`` after the prompt (spec section 3)."""
        device = self._device()
        target = interaction[self.POS_ITEM_ID]
        with torch.no_grad():
            users = self.teacher_users(interaction)
        negatives = self.sample_negatives(interaction[self.USER_ID], self.num_candidates - 1)
        rows, slot_items, answers = [], [], []
        for history, positive, others in zip(
            self._history(interaction), target.tolist(), negatives.tolist()
        ):
            candidates = self.candidate_order([positive] + others)
            answer = self._title_tokens(positive)
            prompt, history = self._fitted_prompt(history, candidates, len(answer))
            rows.append(prompt)
            slot_items.extend(history + candidates)
            answers.append(answer)
        ids, mask, label_positions, labels = pad_with_answers(
            rows, answers, self.eos_token_id, device
        )
        with attention_kernels():
            hidden = self.llm.base_model(
                inputs_embeds=self._embed(ids, users, slot_items), attention_mask=mask
            ).last_hidden_state
        logits = self.llm.get_output_embeddings()(hidden[label_positions]).float()
        return F.cross_entropy(logits, labels)

    # ----- ranking -----------------------------------------------------------------------------
    @torch.no_grad()
    @attention_kernels()
    def prompt_log_likelihoods(self, users, histories, candidate_lists):
        """LLM log-likelihood of ``"title"</s>`` for each candidate of several prompts, in ONE
        forward. After each prompt its candidates' answers form a token trie (shared prefixes share
        tokens); a trie token attends to its prompt and ancestors at its position right after the
        prompt, so each answer scores exactly as if teacher-forced alone, with no per-candidate copy
        of the prompt's keys/values. The float32 vocabulary projection runs only at states
        predicting an answer token (the prompt's last, each trie token with children), each once.
        Identical titles share a path and tie."""
        rows, slot_items, nodes = [], [], {"rows": [], "predictors": [], "tokens": [], "paths": []}
        for row, (history, candidates) in enumerate(zip(histories, candidate_lists)):
            answers = [self._title_tokens(item) for item in candidates]
            prompt, history = self._fitted_prompt(history, candidates, max(map(len, answers)))
            slot_items.extend(history + candidates)
            trie, parents, paths = answer_trie(answers)
            first_node = len(nodes["tokens"])
            nodes["paths"] += [[first_node + node for node in path] for path in paths]
            nodes["rows"] += [row] * len(trie)
            nodes["predictors"] += [len(prompt) + parent for parent in parents]  # -1: prompt's last
            nodes["tokens"] += trie
            rows.append((prompt, trie, parents))
        ids, positions, allowed = prompts_with_tries(rows, self.eos_token_id)
        device, dtype = self._device(), self.llm.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(
            ~allowed, torch.finfo(dtype).min
        )
        hidden = self.llm.base_model(
            inputs_embeds=self._embed(ids.to(device), users, slot_items),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
        ).last_hidden_state
        scores = answer_log_likelihoods(
            hidden, nodes, self.llm.get_output_embeddings(), self.rank_projection_rows
        )
        return scores.split([len(c) for c in candidate_lists])

    @torch.no_grad()
    @attention_kernels()
    def generate_answer(self, interaction_row, candidates, max_new_tokens):
        """Greedy free-text answer of the LLM for ONE user and its candidates (the paper's
        protocol)."""
        users = self.teacher_users(interaction_row)
        history = self._history(interaction_row)[0]
        prompt, history = self._fitted_prompt(history, candidates, max_new_tokens)
        ids = torch.tensor([prompt], device=self._device())
        output = self.llm.generate(
            inputs_embeds=self._embed(ids, users, history + candidates),
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.eos_token_id,
        )
        return self.tokenizer.decode(output[0], skip_special_tokens=True)

    @torch.no_grad()
    def llm_scores(self, interaction, candidate_lists):
        """LLM scores of each row's candidates: ``num_candidates`` per prompt (in
        ``candidate_order``), ``rank_batch_size`` prompts per forward."""
        users = self.teacher_users(interaction)
        histories = self._history(interaction)
        prompts = [
            (row, ordered[start : start + self.num_candidates])
            for row, ordered in enumerate(map(self.candidate_order, candidate_lists))
            for start in range(0, len(ordered), self.num_candidates)
        ]
        scores = [{} for _ in candidate_lists]
        for start in range(0, len(prompts), self.rank_batch_size):
            batch = prompts[start : start + self.rank_batch_size]
            rows = [row for row, _ in batch]
            chunk_scores = self.prompt_log_likelihoods(
                users[rows], [histories[r] for r in rows], [chunk for _, chunk in batch]
            )
            for (row, chunk), values in zip(batch, chunk_scores):
                scores[row].update(zip(chunk, values.tolist()))
        return [
            torch.tensor([s[c] for c in candidates], device=self._device())
            for s, candidates in zip(scores, candidate_lists)
        ]

    def predict(self, interaction):
        # one row per (user, candidate): grouped by user id first, so users with equal sequences
        # stay apart
        first_row, user = rows_by_user(interaction, self.USER_ID, self.ITEM_SEQ, self.ITEM_SEQ_LEN)
        items = interaction[self.ITEM_ID]
        candidates = [list(dict.fromkeys(items[user == u].tolist())) for u in range(len(first_row))]
        by_user = [
            dict(zip(c, s.tolist()))
            for c, s in zip(candidates, self.llm_scores(interaction[first_row], candidates))
        ]
        return torch.tensor(
            [by_user[u][item] for u, item in zip(user.tolist(), items.tolist())],
            device=self._device(),
        )

    def full_sort_predict(self, interaction):
        return self.full_sort_predict_excluding(interaction, None)

    def full_sort_predict_excluding(self, interaction, excluded):
        """Retrieve-then-rerank over the whole catalogue: the stage-1 head scores every item, its
        top ``rerank_k`` among the items not ``excluded`` ([B, n_items] bool: what the protocol
        scores -inf, ``eval_mask_history``'s history; ``None``: nothing) are reranked by the LLM
        score and placed strictly above every other item, which keeps its stage-1 score. The
        evaluation layer passes ``excluded`` (``evaluation.scoring.staged_full_sort``), so no rerank
        slot goes to an item the protocol removes, and nothing else is left out: a target that
        repeats a listed item can rank first. The original cannot rank a catalogue (it generates an
        answer among 20 candidates); an earlier version of ours excluded the model's own input
        window, a protocol of its own."""
        scores = self.stage1_scores(interaction)
        retrieval = scores.clone()
        retrieval[:, 0] = -torch.inf
        if excluded is not None:
            retrieval[excluded.to(retrieval.device)] = -torch.inf
        top = retrieval.topk(min(self.rerank_k, self.n_items - 1), dim=1).indices
        for row, llm_scores in enumerate(self.llm_scores(interaction, top.tolist())):
            # reranked items sit strictly above every other item's stage-1 score
            scores[row, top[row]] = llm_scores - llm_scores.min() + scores[row].max() + 1
        return scores
