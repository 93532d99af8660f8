"""A-LLMRec (KDD'24; code ghdtjr/A-LLMRec) as a RecBole sequential recommender (spec ``allmrec.md``).

Stage 0: a frozen RecBole teacher (``cf_model``, SASRec by default). Stage 1 (``stage1_loss``): an item
auto-encoder on its item embeddings aligned with a text auto-encoder on a fine-tuned Sentence-BERT text
embedding. Stage 2 (``calculate_loss``): the teacher's user state and the item latents as soft tokens of a frozen causal
LLM's prompt (history and candidates); LM loss on the quoted target title + EOS. ``ALLMRecTrainer`` runs
the stages. Ranking (the original only generates text; README "ALLMRec"): ``predict`` scores candidates
by the log-likelihood of ``"title"</s>`` after the prompt; ``full_sort_predict`` reranks the stage-1
head's top ``rerank_k`` items (of those the protocol does not exclude) with it, above every other item.

Bugs of the original avoided (spec section 7): SASRec dropout stays off; negatives are seeded, distinct
and outside the user's whole training history (never the target); the candidate order ignores which
candidate is the target; the stage-1 data is shuffled; one optimizer step per batch."""

from logging import getLogger

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn

from recbole_llmsrec.cf_teacher import build_teacher, user_representation
from recbole_llmsrec.data.dataset import sample_unseen_items, training_history
from recbole_llmsrec.config import require_at_least
from recbole_llmsrec.data.item_text import build_item_texts, build_item_titles, without_special_tokens
from recbole_llmsrec.distributed import rank
from recbole_llmsrec.layers import projection_mlp, rows_by_user
from recbole_llmsrec.llm import (FrozenLLMNotSaved, attention_kernels, context_length, load_llm,
                                 load_llm_from_config,
                                 mean_pooled, require_causal, uses_gradient_checkpointing)

USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN = "[UserRep]", "[HistoryEmb]", "[CandidateEmb]"


def alignment_loss(user, item_emb, item_latent, item_recon, text_emb, text_latent, text_recon,
                   item_weight=0.5, text_weight=0.2):
    """Stage-1 loss L_rec + L_match + item_weight * L_item + text_weight * L_text (spec section 2). Item
    and text tensors are ``[2, B, dim]`` (0: positive, 1: negative). L_rec uses the DECODED item embedding
    and a mean (not sum) over dimensions, as the original."""
    logits = (user.unsqueeze(0) * item_recon).mean(-1)
    rec = F.binary_cross_entropy_with_logits(logits[0], torch.ones_like(logits[0])) + \
        F.binary_cross_entropy_with_logits(logits[1], torch.zeros_like(logits[1]))
    match = F.mse_loss(item_latent[0], text_latent[0]) + F.mse_loss(item_latent[1], text_latent[1])
    item = F.mse_loss(item_recon[0], item_emb[0]) + F.mse_loss(item_recon[1], item_emb[1])
    text = F.mse_loss(text_recon[0], text_emb[0].detach()) + F.mse_loss(text_recon[1], text_emb[1].detach())
    return rec + match + item_weight * item + text_weight * text


class AutoEncoder(nn.Module):
    """``encoder``: Linear(d, latent) + sigmoid (the aligned latent); ``decoder``: Linear(latent, d)."""

    def __init__(self, size, latent_size):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(size, latent_size), nn.Sigmoid())
        self.decoder = nn.Linear(latent_size, size)

    def forward(self, x):
        latent = self.encoder(x)
        return latent, self.decoder(latent)


class ALLMRec(FrozenLLMNotSaved, SequentialRecommender):
    input_type = InputType.POINTWISE
    # full_sort_predict is retrieve-then-rerank: sampled evaluation must call predict (LLM scores)
    sampled_scores_from_full_sort = False
    # the LLM comes from llm_path; the text side is only used by stage 1 and discarded after (spec 2)
    unsaved_prefixes = ("llm.", "text_encoder.", "text_autoencoder.")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.config = config
        self.cf_model, loaded = build_teacher(config, dataset)
        self.register_buffer("stage_done", torch.tensor([loaded, False]))  # stages 0 and 1
        cf_size = self.cf_model.item_embedding.embedding_dim
        self.item_autoencoder = AutoEncoder(cf_size, config["alignment_size"])
        self.text_encoder = self.text_tokenizer = self.text_autoencoder = None

        # frozen: no dropout even in the train mode gradient checkpointing needs (see load_llm)
        self.llm, self.tokenizer = load_llm_from_config(config, kind="causal_lm", frozen=True)
        require_causal(self.llm, "llm_path")  # it scores and generates answers token by token
        self.llm_checkpointing = uses_gradient_checkpointing(self.llm)
        self.tokenizer.add_tokens([USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN], special_tokens=True)
        self.tokenizer.padding_side = "right"
        self.user_token_id, self.history_token_id, self.candidate_token_id = \
            self.tokenizer.convert_tokens_to_ids([USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN])
        self.eos_token_id = self.tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise ValueError(f"the tokenizer of llm_path={config['llm_path']} has no EOS token: the "
                             "stage-2 target is the quoted title followed by EOS.")
        llm_size = self.llm.get_input_embeddings().embedding_dim
        self.user_proj = projection_mlp(cf_size, llm_size, llm_size, nn.LeakyReLU())     # log_emb_proj
        self.item_proj = projection_mlp(config["alignment_size"], llm_size, llm_size, nn.GELU())

        self.titles = without_special_tokens(build_item_titles(dataset, config),
                                             (USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN))
        self.texts = [config["alignment_text_template"].replace("{text}", t)
                      for t in build_item_texts(dataset, config)]
        self.prompt_template = template = config["prompt_template"]
        if "{history}" not in template or "{candidates}" not in template:
            raise ValueError("prompt_template must contain {history} and {candidates}.")
        self.history_max_items = require_at_least(config, "history_max_items", 1)
        self.num_candidates = require_at_least(config, "num_candidates", 2)
        self.rerank_k = config["rerank_k"]
        self.rank_batch_size = require_at_least(config, "rank_batch_size", 1)
        self.rank_projection_rows = require_at_least(config, "rank_projection_rows", 1)
        self.history_matrix = training_history(dataset)
        # each rank draws its own negatives (one process: seed + 0)
        self.negative_generator = torch.Generator().manual_seed(config["seed"] + rank())
        self.seed = config["seed"]
        self._title_token_cache = {}
        self.max_prompt_tokens = context_length(self.llm, self.tokenizer)
        self.prompts_shortened = 0

    # ----- modes -----------------------------------------------------------------------------
    def train(self, mode=True):
        super().train(mode)
        self.cf_model.eval()
        # HF checkpoints only modules in train mode; without dropout (frozen=True) both modes agree
        self.llm.train(mode and self.llm_checkpointing)
        return self

    def load_state_dict(self, state_dict, strict=True, assign=False):
        # a RecBole --checkpoint of stage 2 restores stage_done = [True, True]: freeze its item encoder
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._freeze_finished_stages()
        return result

    def _freeze_finished_stages(self):
        """The one place the item encoder's trainability is set: it trains in stage 1 only."""
        self.item_autoencoder.requires_grad_(not bool(self.stage_done[1]))

    def load_cf_teacher(self, state_dict):
        self.cf_model.load_state_dict(state_dict)
        self.stage_done[0] = True

    @property
    def cf_teacher_ready(self):
        return self.stage_done[0]

    def _users(self, interaction):
        """The teacher's user vectors of the rows of ``interaction``."""
        return user_representation(self.cf_model, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])

    def _device(self):
        return self.user_proj[0].weight.device

    # ----- stage 1: collaborative-text alignment ---------------------------------------------
    def prepare_stage1(self):
        """Load the Sentence-BERT encoder (fine-tuned in stage 1) and the text auto-encoder."""
        config = self.config
        encoder, self.text_tokenizer = load_llm(
            config["text_encoder_path"], kind="base", dtype=config["text_encoder_dtype"],
            trust_remote_code=bool(config["trust_remote_code"]), key="text_encoder_path")
        self.text_encoder = encoder.to(self._device())
        self.text_autoencoder = AutoEncoder(encoder.config.hidden_size,
                                            config["alignment_size"]).to(self._device())

    def stage1_parameters(self):
        return [*self.item_autoencoder.parameters(), *self.text_encoder.parameters(),
                *self.text_autoencoder.parameters()]

    def stage1_loss(self, interaction):
        users, target = interaction[self.USER_ID], interaction[self.POS_ITEM_ID]
        negative = sample_unseen_items(self.history_matrix, users, 1, self.n_items,
                                       self.negative_generator)[:, 0].to(target.device)
        items = torch.stack([target, negative])                                  # [2, B]
        with torch.no_grad():
            user = self._users(interaction)
            item_emb = self.cf_model.item_embedding(items)
        item_latent, item_recon = self.item_autoencoder(item_emb)
        texts = [self.texts[i] for i in items.flatten().tolist()]
        text_emb = mean_pooled(self.text_encoder, self.text_tokenizer, texts,
                               self.config["text_encoder_max_length"]).float().view(2, len(users), -1)
        text_latent, text_recon = self.text_autoencoder(text_emb)
        return alignment_loss(user, item_emb, item_latent, item_recon, text_emb, text_latent, text_recon,
                              self.config["stage1_item_weight"], self.config["stage1_text_weight"])

    def finish_stage1(self):
        """Freeze the item encoder and drop the text side (only the item encoder is used later)."""
        self.text_encoder = self.text_tokenizer = self.text_autoencoder = None
        self.stage_done[1] = True
        self._freeze_finished_stages()

    def stage1_state_dict(self):
        return {"cf_model": self.cf_model.state_dict(),
                "item_autoencoder": self.item_autoencoder.state_dict()}

    def load_stage1_state_dict(self, state):
        self.cf_model.load_state_dict(state["cf_model"])
        self.item_autoencoder.load_state_dict(state["item_autoencoder"])
        self.stage_done.fill_(True)
        self._freeze_finished_stages()

    def stage1_scores(self, interaction):
        """The stage-1 head: ``mean_d(u * decoder(encoder(e_i)))`` for every item, ``[B, n_items]``."""
        user = self._users(interaction)
        _, decoded = self.item_autoencoder(self.cf_model.item_embedding.weight[: self.n_items])
        return user @ decoded.T / decoded.shape[-1]

    # ----- stage 2: prompts with soft tokens -------------------------------------------------
    def _title_tokens(self, item):
        """Token ids of ``"title"`` + EOS (no BOS), the stage-2 target of an item."""
        if item not in self._title_token_cache:
            ids = self.tokenizer(f'"{self.titles[item]}"', add_special_tokens=False)["input_ids"]
            self._title_token_cache[item] = ids + [self.eos_token_id]
        return self._title_token_cache[item]

    def _prompt_ids(self, history, candidates):
        text = self.prompt_template.replace(
            "{history}", ",".join(f'"{self.titles[i]}"{HISTORY_TOKEN}' for i in history)).replace(
            "{candidates}", ",".join(f'"{self.titles[i]}"{CANDIDATE_TOKEN}' for i in candidates))
        # the user's soft token goes first, before BOS, as in the original
        return [self.user_token_id] + self.tokenizer(text)["input_ids"]

    def _fitted_prompt(self, history, candidates, answer_tokens):
        """``(prompt ids, history kept)``: the prompt with room for ``answer_tokens`` more tokens inside the
        LLM's context (``context_length``), its oldest history items left out first; the instruction
        and the candidates always stay (counted in ``prompts_shortened``, warned about once)."""
        ids, start = self._prompt_ids(history, candidates), 0
        while len(ids) + answer_tokens > self.max_prompt_tokens and start < len(history):
            start += 1
            ids = self._prompt_ids(history[start:], candidates)
        if start:
            if not self.prompts_shortened:
                getLogger().warning(
                    f"ALLMRec: a prompt is longer than the LLM's context of {self.max_prompt_tokens} "
                    "tokens: its oldest history items are left out until it fits (the instruction and "
                    "the candidates stay); the number of prompts cut is logged at the end of the run.")
            self.prompts_shortened += 1
        return ids, history[start:]

    def _history(self, interaction):
        seqs, lengths = interaction[self.ITEM_SEQ].tolist(), interaction[self.ITEM_SEQ_LEN].tolist()
        return [seq[max(0, n - self.history_max_items):n] for seq, n in zip(seqs, lengths)]

    def _embed(self, ids, users, slot_items):
        """Input embeddings of ``ids`` [B, T] with the soft tokens of ``users`` [B, d] (SASRec states) and
        ``slot_items`` (item ids of every history/candidate slot, in the order the slots appear) put in."""
        user_slots = ids == self.user_token_id
        item_slots = (ids == self.history_token_id) | (ids == self.candidate_token_id)
        if item_slots.sum().item() != len(slot_items) or (user_slots.sum(1) != 1).any():
            raise ValueError(f"the tokenizer of {self.llm.name_or_path} did not keep the soft-token "
                             "slots as single special tokens.")
        embeds = self.llm.get_input_embeddings()(
            ids.masked_fill(user_slots | item_slots, self.eos_token_id))
        item_ids = torch.as_tensor(slot_items, dtype=torch.long, device=ids.device)
        latent, _ = self.item_autoencoder(self.cf_model.item_embedding(item_ids))
        embeds = embeds.masked_scatter(item_slots.unsqueeze(-1), self.item_proj(latent).to(embeds.dtype))
        return embeds.masked_scatter(user_slots.unsqueeze(-1), self.user_proj(users).to(embeds.dtype))

    def candidate_order(self, items):
        """A fixed pseudo-random order of a user's candidates that ignores which one is the target."""
        keys = (torch.as_tensor(items) * 2654435761 + self.seed) % 2147483647
        return [items[i] for i in torch.argsort(keys).tolist()]

    def calculate_loss(self, interaction):
        """Stage 2: LM loss on ``"target title"</s>`` after the prompt (spec section 3)."""
        device = self._device()
        target = interaction[self.POS_ITEM_ID]
        with torch.no_grad():
            users = self._users(interaction)
        negatives = sample_unseen_items(self.history_matrix, interaction[self.USER_ID],
                                        self.num_candidates - 1, self.n_items, self.negative_generator)
        rows, slot_items, answers = [], [], []
        for history, positive, others in zip(self._history(interaction), target.tolist(),
                                             negatives.tolist()):
            candidates = self.candidate_order([positive] + others)
            answer = self._title_tokens(positive)
            prompt, history = self._fitted_prompt(history, candidates, len(answer))
            rows.append(prompt)
            slot_items.extend(history + candidates)
            answers.append(answer)
        ids, mask, label_positions, labels = _pad_with_answers(rows, answers, self.eos_token_id, device)
        with attention_kernels():
            hidden = self.llm.base_model(inputs_embeds=self._embed(ids, users, slot_items),
                                         attention_mask=mask).last_hidden_state
        logits = self.llm.get_output_embeddings()(hidden[label_positions]).float()
        return F.cross_entropy(logits, labels)

    # ----- ranking -----------------------------------------------------------------------------
    @torch.no_grad()
    @attention_kernels()
    def prompt_log_likelihoods(self, users, histories, candidate_lists):
        """LLM log-likelihood of ``"title"</s>`` for each candidate of several prompts, in ONE forward.
        After each prompt its candidates' answers form a token trie (shared prefixes share tokens); a trie
        token attends to its prompt and ancestors at its position right after the prompt, so each answer
        scores exactly as if teacher-forced alone, with no per-candidate copy of the prompt's keys/values.
        The float32 vocabulary projection runs only at states predicting an answer token (the prompt's
        last, each trie token with children), each once. Identical titles share a path and tie."""
        rows, slot_items, node_rows, predictors, tokens, answer_nodes = [], [], [], [], [], []
        for row, (history, candidates) in enumerate(zip(histories, candidate_lists)):
            deepest = max(len(self._title_tokens(item)) for item in candidates)
            prompt, history = self._fitted_prompt(history, candidates, deepest)
            slot_items.extend(history + candidates)
            node_of, parents, trie = {}, [], []
            for item in candidates:
                node, path = -1, []
                for token in self._title_tokens(item):
                    if (node, token) not in node_of:
                        node_of[node, token] = len(trie)
                        parents.append(node)
                        trie.append(token)
                    node = node_of[node, token]
                    path.append(len(tokens) + node)
                answer_nodes.append(path)
            rows.append((prompt, trie, parents))
            node_rows += [row] * len(trie)
            predictors += [len(prompt) + parent for parent in parents]   # the prompt's last for -1
            tokens += trie
        ids, positions, allowed = _prompts_with_tries(rows, self.eos_token_id)
        device = self._device()
        mask = torch.zeros(allowed.shape, dtype=self.llm.dtype).masked_fill_(~allowed, torch.finfo(
            self.llm.dtype).min)
        hidden = self.llm.base_model(
            inputs_embeds=self._embed(ids.to(device), users, slot_items), attention_mask=mask.to(device),
            position_ids=positions.to(device)).last_hidden_state
        states, state_of_node = torch.unique(torch.tensor([node_rows, predictors]), dim=1,
                                             return_inverse=True)
        states = hidden[states[0].to(device), states[1].to(device)].float()
        state_of_node = state_of_node.to(device)
        head = self.llm.get_output_embeddings()
        weight, tokens = head.weight.float(), torch.tensor(tokens, device=device)
        bias = None if head.bias is None else head.bias.float()
        # log p = logit - logsumexp, chunked (no [states, vocabulary] tensor); own logits by dot product
        normaliser = torch.cat([F.linear(chunk, weight, bias).logsumexp(-1)
                                for chunk in states.split(self.rank_projection_rows)])
        node_scores = (states[state_of_node] * weight[tokens]).sum(-1) - normaliser[state_of_node]
        node_scores = node_scores if bias is None else node_scores + bias[tokens]
        path_nodes = torch.nn.utils.rnn.pad_sequence([torch.tensor(p) for p in answer_nodes],
                                                     batch_first=True, padding_value=-1).to(device)
        scores = node_scores[path_nodes.clamp(min=0)].masked_fill(path_nodes < 0, 0).sum(1)
        return scores.split([len(c) for c in candidate_lists])

    @torch.no_grad()
    @attention_kernels()
    def generate_answer(self, interaction_row, candidates, max_new_tokens):
        """Greedy free-text answer of the LLM for ONE user and its candidates (the paper's protocol)."""
        users = self._users(interaction_row)
        history = self._history(interaction_row)[0]
        prompt, history = self._fitted_prompt(history, candidates, max_new_tokens)
        ids = torch.tensor([prompt], device=self._device())
        output = self.llm.generate(inputs_embeds=self._embed(ids, users, history + candidates),
                                   attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                   do_sample=False, num_beams=1, eos_token_id=self.eos_token_id,
                                   pad_token_id=self.eos_token_id)
        return self.tokenizer.decode(output[0], skip_special_tokens=True)

    @torch.no_grad()
    def llm_scores(self, interaction, candidate_lists):
        """LLM scores of each row's candidates: ``num_candidates`` per prompt (in ``candidate_order``),
        ``rank_batch_size`` prompts per forward."""
        users = self._users(interaction)
        histories = self._history(interaction)
        prompts = [(row, ordered[start:start + self.num_candidates])
                   for row, ordered in enumerate(map(self.candidate_order, candidate_lists))
                   for start in range(0, len(ordered), self.num_candidates)]
        scores = [{} for _ in candidate_lists]
        for start in range(0, len(prompts), self.rank_batch_size):
            batch = prompts[start:start + self.rank_batch_size]
            rows = [row for row, _ in batch]
            chunk_scores = self.prompt_log_likelihoods(users[rows], [histories[r] for r in rows],
                                                       [chunk for _, chunk in batch])
            for (row, chunk), values in zip(batch, chunk_scores):
                scores[row].update(zip(chunk, values.tolist()))
        return [torch.tensor([s[c] for c in candidates], device=self._device())
                for s, candidates in zip(scores, candidate_lists)]

    def predict(self, interaction):
        # one row per (user, candidate): grouped by user id first, so users with equal sequences stay apart
        first_row, user = rows_by_user(interaction, self.USER_ID, self.ITEM_SEQ, self.ITEM_SEQ_LEN)
        items = interaction[self.ITEM_ID]
        candidates = [list(dict.fromkeys(items[user == u].tolist())) for u in range(len(first_row))]
        by_user = [dict(zip(c, s.tolist())) for c, s in zip(candidates, self.llm_scores(
            interaction[first_row], candidates))]
        return torch.tensor([by_user[u][item] for u, item in zip(user.tolist(), items.tolist())],
                            device=self._device())

    def full_sort_predict(self, interaction):
        return self.full_sort_predict_excluding(interaction, None)

    def full_sort_predict_excluding(self, interaction, excluded):
        """Retrieve-then-rerank over the whole catalogue: the stage-1 head scores every item, its top
        ``rerank_k`` among the items not ``excluded`` ([B, n_items] bool: what the protocol scores -inf,
        ``eval_mask_history``'s history; ``None``: nothing) are reranked by the LLM score and placed
        strictly above every other item, which keeps its stage-1 score. The evaluation layer passes
        ``excluded`` (``evaluation.StagedFullSortEvaluation``), so no rerank slot goes to an item the
        protocol removes, and nothing else is left out: a target that repeats a listed item can rank
        first. The original cannot rank a catalogue (it generates an answer among 20 candidates); an
        earlier version of ours excluded the model's own input window, a protocol of its own."""
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


def _prompts_with_tries(rows, pad_id):
    """Right-padded ids, positions and [B, 1, T, T] allowed-attention mask of ``rows`` ``(prompt ids, trie
    tokens, trie parents)`` (parent -1: the prompt); a trie token sees the prompt, its ancestors and
    itself, at position len(prompt) + its depth."""
    length = max(len(prompt) + len(trie) for prompt, trie, _ in rows)
    length += -length % 16          # a mask row aligned for SDPA's memory-efficient kernel
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    positions = torch.zeros(len(rows), length, dtype=torch.long)
    allowed = torch.eye(length, dtype=torch.bool).repeat(len(rows), 1, 1)   # padding sees itself only
    seen = [], [], []                     # (row, trie token, ancestor-or-self) index triples
    for row, (prompt, trie, parents) in enumerate(rows):
        start = len(prompt)
        ids[row, : start + len(trie)] = torch.tensor(prompt + trie)
        allowed[row, :start, :start] = torch.ones(start, start, dtype=torch.bool).tril()
        allowed[row, start:start + len(trie), :start] = True
        lineage = []
        for node, parent in enumerate(parents):
            lineage.append((lineage[parent] if parent >= 0 else []) + [start + node])
            seen[0].extend([row] * len(lineage[-1]))
            seen[1].extend([start + node] * len(lineage[-1]))
            seen[2].extend(lineage[-1])
        positions[row, : start + len(trie)] = torch.tensor(
            list(range(start)) + [start + len(line) - 1 for line in lineage])
    allowed[seen] = True
    return ids, positions, allowed.unsqueeze(1)


def _pad_with_answers(prompts, answers, pad_id, device):
    """Right-padded ``prompt + answer`` ids, mask, the positions predicting answer tokens and the tokens."""
    length = max(len(p) + len(a) for p, a in zip(prompts, answers))
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    rows, positions, labels = [], [], []
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        sequence = prompt + answer
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
        rows += [row] * len(answer)
        positions += range(len(prompt) - 1, len(sequence) - 1)
        labels += answer
    label_positions = (torch.tensor(rows, device=device), torch.tensor(positions, device=device))
    return ids.to(device), mask.to(device), label_positions, torch.tensor(labels, device=device)
