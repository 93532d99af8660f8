"""Beam search over a causal LM, constrained to the codes of existing items (an :class:`IndexTrie`),
and the teacher-forced log-likelihood of given codes.

A beam's score is the sum, over the generated tokens, of the float32 ``log_softmax`` over the whole
vocabulary of the chosen token: the log-likelihood of the code's tokens after the prompt. (LC-Rec's
Hugging Face ``generate`` also let the beams emit EOS after the code and ranked by
``sequences_scores``, which add log P(EOS | code) and divide by the length; every code has the same
length, so the division changes no order, but the EOS term does: we rank items by their index's
likelihood alone, which is also what sampled evaluation scores, spec ``lcrec.md`` 5.) Prompts
come left-padded; positions are passed explicitly (``attention_mask.cumsum(-1) - 1``) and continue
over the generated tokens. The prompt runs once per
user; its KV cache is then gathered for the beams, and each step feeds only the new token. The
caller puts the LLM in eval mode.
"""

import inspect

import torch

from recbole_llmsrec.llm.loading import cache_keyword

NEG_INF = float("-inf")


def prompt_positions(attention_mask):
    """Position ids of a left-padded batch: 0 for the first real token (padding gets 0 too)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _next_token_logits(output):
    """The last position's logits, in float32 (the scores' precision even for a bf16 LLM)."""
    return output.logits[:, -1].float()


def _log_probs_of(logits, tokens):
    """``log_softmax`` over the whole vocabulary, at the columns ``tokens`` (the fused
    ``log_softmax`` then a gather: on CPU faster than ``logsumexp``)."""
    return logits.log_softmax(-1)[..., tokens]


def _forward(llm, input_ids, attention_mask, position_ids, cache=None, last_only=False):
    """``(output, KV cache)`` of one cached forward; the cache argument's name is the installed
    transformers' (``cache`` from 5.x on, ``past_key_values`` before). ``last_only``: logits of the
    last position only (``logits_to_keep=1`` where the model takes it), not ``[B, T, V]``."""
    keyword = cache_keyword(llm)
    options = {} if cache is None else {keyword: cache}
    if last_only and _takes(llm, "logits_to_keep"):
        options["logits_to_keep"] = 1
    output = llm(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **options,
    )
    return output, getattr(output, keyword)


def _takes(llm, argument):
    """Whether ``llm``'s forward (under a peft wrapper: the base model's) has ``argument``."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return argument in inspect.signature(base.forward).parameters


class _TrieConstraint:
    """The trie's values as the candidates of each step; the state is the beam's trie node."""

    def __init__(self, trie, level_tokens, removed, device):
        self.trie, self.removed = trie, removed
        self.tokens = [torch.as_tensor(tokens, device=device).long() for tokens in level_tokens]

    def start(self, batch_size, device):
        return torch.zeros(batch_size, dtype=torch.long, device=device)  # every user at the root

    def candidates(self, step, state, logits):
        """``(log-probs [rows, values], token id of each value)``; -inf where not allowed."""
        allowed = self.trie.allowed(step, state, self.removed)
        scores = _log_probs_of(logits, self.tokens[step]).masked_fill(~allowed, NEG_INF)
        return scores, self.tokens[step]

    def advance(self, step, state, columns):
        return self.trie.step(step, state, columns)


class _Unconstrained:
    """Every vocabulary token as a candidate; no state."""

    def start(self, batch_size, device):
        return torch.zeros(batch_size, dtype=torch.long, device=device)

    def candidates(self, step, state, logits):
        return logits.log_softmax(-1), torch.arange(logits.shape[-1], device=logits.device)

    def advance(self, step, state, columns):
        return state


def _select(beam_scores, candidate_scores, num_beams):
    """The best ``num_beams`` (beam, candidate) pairs per user.

    ``beam_scores [B, k]``, ``candidate_scores [B * k, C]`` -> ``(scores, parents, columns)``, each
    ``[B, num_beams]``, best first. A -inf beam's candidates stay -inf (a dead beam is never
    extended into duplicates); when fewer than ``num_beams`` finite pairs exist, the rest are -inf.
    """
    batch_size, width = beam_scores.shape
    columns = candidate_scores.shape[-1]
    total = (beam_scores.unsqueeze(-1) + candidate_scores.view(batch_size, width, columns)).view(
        batch_size, -1
    )
    if total.shape[-1] < num_beams:  # too few pairs at all: pad with dead ones
        total = torch.cat(
            [total, total.new_full((batch_size, num_beams - total.shape[-1]), NEG_INF)], -1
        )
    scores, index = total.topk(num_beams, dim=-1)
    parents = torch.div(index, columns, rounding_mode="floor").clamp(max=width - 1)
    return scores, parents, index % columns


def _feed(llm, tokens, attention_mask, positions, cache):
    """One step of the LM on ``tokens [rows]`` with the cache -> (float32 logits, cache)."""
    output, cache = _forward(
        llm, tokens.unsqueeze(-1), attention_mask, positions.unsqueeze(-1), cache
    )
    return _next_token_logits(output), cache


def _beam_loop(llm, input_ids, attention_mask, num_beams, steps, constraint):
    """The shared beam search: ``steps`` tokens, candidates from ``constraint``.

    -> ``(scores [B, num_beams], states [B, num_beams], columns [B, num_beams, steps])``: the
    beams best first, their constraint states and the candidate column chosen at each step.
    """
    batch_size, device = input_ids.shape[0], input_ids.device
    positions = prompt_positions(attention_mask)
    output, cache = _forward(llm, input_ids, attention_mask, positions, last_only=True)
    logits = _next_token_logits(output)
    scores = torch.zeros(batch_size, 1, device=device)  # one beam per user: the empty prefix
    state = constraint.start(batch_size, device)
    history = torch.zeros(batch_size, 1, 0, dtype=torch.long, device=device)
    mask = attention_mask.repeat_interleave(num_beams, 0)
    next_position = positions[:, -1].repeat_interleave(num_beams, 0) + 1
    users = torch.arange(batch_size, device=device).unsqueeze(-1)
    for step in range(steps):
        candidates, tokens = constraint.candidates(step, state, logits)
        width = scores.shape[1]
        scores, parents, columns = _select(scores, candidates, num_beams)
        rows = (users * width + parents).view(-1)
        state = constraint.advance(step, state[rows], columns.view(-1))
        state = state.masked_fill(torch.isneginf(scores).view(-1), -1)
        chosen = history[users, parents]
        history = torch.cat([chosen, columns.unsqueeze(-1)], -1)
        if step + 1 < steps:  # the last token's successor is not needed
            cache.reorder_cache(rows)  # parents' caches; at step 0 this repeats the prompt's
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], -1)
            logits, cache = _feed(llm, tokens[columns.view(-1)], mask, next_position + step, cache)
    return scores, state.view(batch_size, num_beams), history


@torch.no_grad()
def constrained_beam_search(
    llm, input_ids, attention_mask, trie, level_tokens, num_beams, excluded=None
):
    """Beam search of item codes after each user's prompt, over the trie's items only.

    ``input_ids``/``attention_mask`` ``[B, T]`` (left-padded), ``trie`` on the LLM's device,
    ``level_tokens[l][v]`` the vocabulary id of value ``v`` at level ``l``, ``excluded`` (optional
    bool ``[B, n_items]``) items never returned for that user. -> ``(items int64 [B, num_beams],
    scores float32 [B, num_beams])``, best first, no item twice per user; when fewer than
    ``num_beams`` items remain, the empty slots hold item 0 with score -inf.
    """
    removed = None if excluded is None else trie.exclusions(excluded)
    constraint = _TrieConstraint(trie, level_tokens, removed, input_ids.device)
    scores, items, _ = _beam_loop(
        llm, input_ids, attention_mask, num_beams, trie.levels, constraint
    )
    return items.clamp(min=0), scores


@torch.no_grad()
def unconstrained_beam_search(llm, input_ids, attention_mask, num_beams, steps):
    """The same beam search with every vocabulary token allowed at every step (the constraint's
    cost is the difference). -> ``(tokens int64 [B, num_beams, steps], scores float32 [B,
    num_beams])``, best first."""
    scores, _, tokens = _beam_loop(
        llm, input_ids, attention_mask, num_beams, steps, _Unconstrained()
    )
    return tokens, scores


def code_tokens(codes, level_tokens):
    """The vocabulary ids of ``codes [..., L]`` (negative values read as value 0)."""
    return torch.stack(
        [
            torch.as_tensor(tokens, device=codes.device).long()[codes[..., level].clamp(min=0)]
            for level, tokens in enumerate(level_tokens)
        ],
        -1,
    )


def _teacher_forced(llm, tokens, attention_mask, positions, cache):
    """Log-probs of ``tokens [rows, n]``'s last ``n - 1`` tokens, each after the ones before it,
    given the cache of the rows' prompts: the ``n - 1`` positions in one forward."""
    rows, length = tokens.shape
    mask = torch.cat([attention_mask, attention_mask.new_ones(rows, length - 1)], -1)
    steps = torch.arange(length - 1, device=tokens.device)
    output, _ = _forward(llm, tokens[:, :-1], mask, positions[:, -1:] + 1 + steps, cache)
    log_probs = output.logits.float().log_softmax(-1)  # [rows, n - 1, V]
    return log_probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def code_log_likelihoods(llm, input_ids, attention_mask, candidate_codes, level_tokens):
    """The log-likelihood of each candidate's code tokens after its user's prompt.

    ``candidate_codes`` int64 ``[B, C, L]`` -> float32 ``[B, C]``: the sum over the L code tokens of
    the float32 full-vocabulary ``log_softmax`` (teacher forcing; -inf for a code with a negative
    value, such as the padding item's). The prompt runs once per user, its KV cache is repeated
    over the C candidates, and their code positions run in one forward (its logits are
    ``[B * C, L - 1, vocabulary]``: the caller sizes B and C to fit).
    """
    batch_size, num_candidates, levels = candidate_codes.shape
    codes = candidate_codes.to(input_ids.device)
    tokens = code_tokens(codes, level_tokens)  # [B, C, L]
    positions = prompt_positions(attention_mask)
    output, cache = _forward(llm, input_ids, attention_mask, positions, last_only=True)
    total = _next_token_logits(output).log_softmax(-1).gather(1, tokens[..., 0])  # first token
    if levels > 1:
        cache.batch_repeat_interleave(num_candidates)
        later = _teacher_forced(
            llm,
            tokens.view(batch_size * num_candidates, levels),
            attention_mask.repeat_interleave(num_candidates, 0),
            positions.repeat_interleave(num_candidates, 0),
            cache,
        )
        total = total + later.sum(-1).view(batch_size, num_candidates)
    return total.masked_fill((codes < 0).any(-1), NEG_INF)
