"""Scoring a user's candidates by the LLM in one forward (A-LLMRec's ranking, README "ALLMRec"):
each prompt is followed by the token trie of its candidates' answers, a trie token attending to its
prompt and its ancestors only, so each answer scores exactly as if teacher-forced alone."""

import torch
import torch.nn.functional as F


def prompts_with_tries(rows, pad_id):
    """Right-padded ids, positions and [B, 1, T, T] allowed-attention mask of ``rows`` ``(prompt
    ids, trie tokens, trie parents)`` (parent -1: the prompt); a trie token sees the prompt, its
    ancestors and itself, at position len(prompt) + its depth."""
    length = max(len(prompt) + len(trie) for prompt, trie, _ in rows)
    length += -length % 16  # a mask row aligned for SDPA's memory-efficient kernel
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    positions = torch.zeros(len(rows), length, dtype=torch.long)
    # padding sees itself only
    allowed = torch.eye(length, dtype=torch.bool).repeat(len(rows), 1, 1)
    seen = [], [], []  # (row, trie token, ancestor-or-self) index triples
    for row, (prompt, trie, parents) in enumerate(rows):
        start = len(prompt)
        ids[row, : start + len(trie)] = torch.tensor(prompt + trie)
        allowed[row, :start, :start] = torch.ones(start, start, dtype=torch.bool).tril()
        allowed[row, start : start + len(trie), :start] = True
        lineage = []
        for node, parent in enumerate(parents):
            lineage.append((lineage[parent] if parent >= 0 else []) + [start + node])
            seen[0].extend([row] * len(lineage[-1]))
            seen[1].extend([start + node] * len(lineage[-1]))
            seen[2].extend(lineage[-1])
        positions[row, : start + len(trie)] = torch.tensor(
            list(range(start)) + [start + len(line) - 1 for line in lineage]
        )
    allowed[seen] = True
    return ids, positions, allowed.unsqueeze(1)


def pad_with_answers(prompts, answers, pad_id, device):
    """Right-padded ``prompt + answer`` ids, mask, the positions predicting answer tokens and the
    tokens."""
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


def answer_trie(answers):
    """``(tokens, parents, paths)`` of the token trie of ``answers`` (token id lists): node i holds
    ``tokens[i]`` below node ``parents[i]`` (-1: the root, i.e. the prompt); ``paths[a]`` lists the
    nodes of answer a, root first. Answers with a common prefix share its nodes."""
    node_of, parents, tokens, paths = {}, [], [], []
    for answer in answers:
        node, path = -1, []
        for token in answer:
            if (node, token) not in node_of:
                node_of[node, token] = len(tokens)
                parents.append(node)
                tokens.append(token)
            node = node_of[node, token]
            path.append(node)
        paths.append(path)
    return tokens, parents, paths


def answer_log_likelihoods(hidden, nodes, head, chunk_rows):
    """Each answer's log-likelihood: the sum over its trie nodes of log p(node's token | the state
    that predicts it). ``nodes``: per node its ``rows`` (batch row), ``predictors`` (position of the
    state predicting it) and ``tokens``, and per answer its ``paths`` (node indices). The float32
    vocabulary projection (``head``) runs once per distinct predicting state, ``chunk_rows`` states
    at a time."""
    device = hidden.device
    states, state_of_node = torch.unique(
        torch.tensor([nodes["rows"], nodes["predictors"]]), dim=1, return_inverse=True
    )
    states = hidden[states[0].to(device), states[1].to(device)].float()
    state_of_node = state_of_node.to(device)
    weight, tokens = head.weight.float(), torch.tensor(nodes["tokens"], device=device)
    bias = None if head.bias is None else head.bias.float()
    # log p = logit - logsumexp, chunked (no [states, vocabulary] tensor); own logits by dot product
    normaliser = torch.cat(
        [F.linear(chunk, weight, bias).logsumexp(-1) for chunk in states.split(chunk_rows)]
    )
    node_scores = (states[state_of_node] * weight[tokens]).sum(-1) - normaliser[state_of_node]
    node_scores = node_scores if bias is None else node_scores + bias[tokens]
    path_nodes = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(p) for p in nodes["paths"]], batch_first=True, padding_value=-1
    ).to(device)
    return node_scores[path_nodes.clamp(min=0)].masked_fill(path_nodes < 0, 0).sum(1)
