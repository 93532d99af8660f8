"""LC-Rec's item indices: an RQ-VAE over the items' text embeddings (Zheng et al., "Adapting
Large Language Models by Integrating Collaborative Semantics for Recommendation", ICDE 2024, section
III-A; code: RUCAIBox/LC-Rec ``index/``), rewritten here.

``train_rqvae``: an MLP encoder (ReLU, xavier-normal, dropout), a quantiser per entry of
``rqvae_codebook_sizes`` on the residual of the earlier levels (k-means initialised on the first
batch), the mirrored decoder; loss: MSE reconstruction + ``rqvae_quant_loss_weight`` x the levels'
mean of codebook + ``rqvae_beta`` x commitment loss, straight-through gradients; a level of positive
``rqvae_sinkhorn_epsilons`` assigns its batches with Sinkhorn-Knopp, as LC-Rec's forward does.
AdamW, linear warm-up schedule, gradients clipped at 1.0.
``rqvae_codes``: the nearest code at every level, then LC-Rec's uniform semantic mapping (up to
``rqvae_collision_rounds`` Sinkhorn rounds over the colliding groups), after which LC-Rec kept what
still collided (identical texts always do); ``resolve_collisions`` then guarantees distinct codes.

Departures: k-means is seeded (LC-Rec's was not) with scikit-learn's default restarts; weights,
dropout and batches come from ``seed`` on CPU: one seed, one index; Sinkhorn in the log domain
(LC-Rec's ``exp(-d / epsilon)`` overflows below epsilon ~0.0014); the repair's epsilons are
``rqvae_sinkhorn_epsilons`` per level (LC-Rec's script zeroed all but the last); the last epoch's
model (LC-Rec picked a saved checkpoint by hand); no batch norm, ``main.py``'s default
(``index/run.sh``'s ``--bn False`` turned it on: argparse's ``type=bool`` reads "False" as True).
"""

import math
from logging import getLogger

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch import nn
from transformers import get_linear_schedule_with_warmup

from recbole_llmsrec.data.item_text import build_item_texts
from recbole_llmsrec.llm.embedding_cache import cached_item_embeddings, encoder_identity
from recbole_llmsrec.llm.loading import load_llm, mean_pooled_embeddings

# LC-Rec's ``center_distance_for_constraint``: keeps the scale positive when all distances are equal
AMPLITUDE_FLOOR = 1e-5
# ``generate_indices.py``: the last level's epsilon in the repair when training used argmin there
LAST_LEVEL_REPAIR_EPSILON = 0.003
GRADIENT_CLIP_NORM = 1.0  # ``index/trainer.py``
REPORTS_PER_TRAINING = 10  # the loss is logged every ~10% of the epochs


def equal_length_batches(tokenizer, texts, max_length):
    """The rows of ``texts`` in batches of one token count (truncated to ``max_length``), at most
    ``max_length`` tokens each: nothing is padded, so a text's embedding does not depend on its
    batch (LC-Rec encoded one text per forward), and no forward outgrows one longest text."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    batches = []
    for row in sorted(range(len(texts)), key=lambda row: (lengths[row], row)):
        length = lengths[row]
        if (
            not batches
            or lengths[batches[-1][0]] != length
            or (len(batches[-1]) + 1) * length > max_length
        ):
            batches.append([])
        batches[-1].append(row)
    return batches


def _field_texts(config, dataset):
    """Per ``item_text_fields`` field, the text of each item 1..n-1 ('' where it has none)."""
    fields = config["item_text_fields"]
    if not fields:
        raise ValueError(
            "item_text_fields is not set: the RQ-VAE embeds the .item columns it names."
        )
    return [
        build_item_texts(dataset, config, fields=[field], template="{value}", fallback="")[1:]
        for field in ([fields] if isinstance(fields, str) else fields)
    ]


def item_text_embeddings(config, dataset):
    """``(float32 [n_items - 1, dim], encoder identity)``: LC-Rec's item embeddings
    (``data_process/amazon_text_emb.py``): each ``item_text_fields`` field of an item embedded
    alone by the frozen ``rqvae_encoder_path`` (the attention-masked mean of its last hidden states,
    at most ``rqvae_encoder_max_length`` tokens), averaged over the item's non-empty fields; an
    item with none gets the embedding of ``item_text_fallback``. Through the embedding cache: a
    second run loads the encoder (its identity names the cache) but encodes nothing."""
    max_length = config["rqvae_encoder_max_length"]
    columns, fallback = _field_texts(config, dataset), config["item_text_fallback"]
    texts = list(
        dict.fromkeys([text for column in columns for text in column if text] + [fallback])
    )
    path = config["rqvae_encoder_path"]
    model, tokenizer = load_llm(
        path,
        kind="base",
        dtype=config["rqvae_encoder_dtype"],
        key="rqvae_encoder_path",
        frozen=True,
        trust_remote_code=bool(config["trust_remote_code"]),
    )
    if tokenizer.pad_token is None:  # never used to pad (equal_length_batches), but required
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    identity = f"{encoder_identity(model, path)}|mean last hidden state|max_length {max_length}"

    def encode(batch):  # the weights move to the device only if something is encoded
        return mean_pooled_embeddings(model.to(config["device"]), tokenizer, batch, max_length)

    table = cached_item_embeddings(
        texts,
        encode,
        cache_dir=config["checkpoint_dir"],
        encoder_id=identity,
        template="{value}",
        batches=equal_length_batches(tokenizer, texts, max_length),
        show_progress=bool(config["show_progress"]),
    )
    row_of = {text: row for row, text in enumerate(texts)}
    sums, counts = torch.zeros(len(columns[0]), table.shape[1]), torch.zeros(len(columns[0]))
    for column in columns:
        present = torch.tensor([bool(text) for text in column])
        sums[present] += table[[row_of[text] for text in column if text]]
        counts += present
    empty = counts == 0  # an item without any field text: the fallback text's embedding
    sums[empty], counts[empty] = table[row_of[fallback]], 1
    return sums / counts.unsqueeze(1), identity


def mlp(widths, dropout):
    """LC-Rec's ``MLPLayers``: dropout then a linear layer per consecutive pair of ``widths``, ReLU
    between layers (none after the last), xavier-normal weights and zero biases."""
    layers = []
    for index, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Dropout(dropout), nn.Linear(width_in, width_out)]
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    network = nn.Sequential(*layers)
    for layer in network:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return network


def squared_distances(points, codebook):
    """``[len(points), len(codebook)]`` squared Euclidean distances."""
    squares = points.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1).unsqueeze(0)
    return squares - 2 * points @ codebook.t()


@torch.no_grad()
def sinkhorn_codes(distances, epsilon, iterations):
    """LC-Rec's uniform semantic mapping: each row's code under the entropic optimal transport of
    the rows onto the codes with equal mass per code (Sinkhorn-Knopp, ``iterations`` alternating row
    and column normalisations, in float64). The distances are first centred on the midpoint of their
    range and scaled to [-1, 1] (``center_distance_for_constraint``); computed in the log domain,
    which is the same transport without ``exp`` overflowing at small ``epsilon``."""
    distances = distances.double()
    high, low = distances.max(), distances.min()
    middle = (high + low) / 2
    log_plan = -(distances - middle) / (high - middle + AMPLITUDE_FLOOR) / epsilon
    rows, codes = log_plan.shape
    log_plan = log_plan - torch.logsumexp(log_plan.flatten(), 0)
    for _ in range(iterations):
        log_plan = log_plan - torch.logsumexp(log_plan, 1, keepdim=True) - math.log(rows)
        log_plan = log_plan - torch.logsumexp(log_plan, 0, keepdim=True) - math.log(codes)
    return log_plan.argmax(1)


def kmeans_centres(points, count, iterations, seed):
    """``count`` k-means centres of ``points`` (scikit-learn, ``random_state=seed``)."""
    found = KMeans(n_clusters=count, max_iter=iterations, random_state=seed).fit(
        points.detach().cpu().double().numpy()
    )
    return torch.from_numpy(found.cluster_centers_).to(points.dtype)


class RQVAE(nn.Module):
    """LC-Rec's RQ-VAE (``index/models/rqvae.py``) with the sizes and losses of ``config``'s
    ``rqvae_*`` keys; the codebooks are k-means initialised in the first training forward."""

    def __init__(self, in_dim, config):
        super().__init__()
        widths = [in_dim, *config["rqvae_hidden_sizes"], config["rqvae_code_size"]]
        self.encoder = mlp(widths, config["rqvae_dropout"])
        self.decoder = mlp(widths[::-1], config["rqvae_dropout"])
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.zeros(size, config["rqvae_code_size"]))
            for size in config["rqvae_codebook_sizes"]
        )
        self.beta = config["rqvae_beta"]
        self.kmeans = (config["rqvae_kmeans_iterations"], config["seed"])
        self.sinkhorn_iterations = config["rqvae_sinkhorn_iterations"]
        self.initialised = False

    def assign(self, residual, codebook, epsilon):
        """Each row's code: the nearest one, or Sinkhorn's where ``epsilon`` > 0."""
        distances = squared_distances(residual.detach(), codebook.detach())
        if epsilon > 0:
            return sinkhorn_codes(distances, epsilon, self.sinkhorn_iterations)
        return distances.argmin(1)

    def quantise(self, latents, epsilons):
        """``(quantised, quantisation loss, codes [rows, levels])``: level by level, the residual's
        code; the loss is the levels' mean of codebook + beta x commitment loss, and ``quantised``
        carries the gradient straight to ``latents`` (``index/models/rq.py``, ``vq.py``)."""
        residual, quantised, losses, codes = latents, 0, [], []
        for codebook, epsilon in zip(self.codebooks, epsilons):
            if not self.initialised and self.training:
                codebook.data.copy_(kmeans_centres(residual, len(codebook), *self.kmeans))
            code = self.assign(residual, codebook, epsilon)
            chosen = codebook[code]
            losses.append(
                F.mse_loss(chosen, residual.detach())
                + self.beta * F.mse_loss(residual, chosen.detach())
            )
            passed = residual + (chosen - residual).detach()
            residual = residual - passed
            quantised = quantised + passed
            codes.append(code)
        self.initialised = self.initialised or self.training
        return quantised, torch.stack(losses).mean(), torch.stack(codes, 1)

    def forward(self, embeddings, epsilons):
        quantised, quantisation_loss, codes = self.quantise(self.encoder(embeddings), epsilons)
        return self.decoder(quantised), quantisation_loss, codes


def check_capacity(n_items, config):
    """Refuse codebooks that cannot give ``n_items`` distinct codes, or a first batch smaller than a
    codebook (k-means needs a point per centre)."""
    sizes = list(config["rqvae_codebook_sizes"])
    if math.prod(sizes) < n_items:
        raise ValueError(
            f"rqvae_codebook_sizes={sizes} has {math.prod(sizes)} codes, fewer than the "
            f"{n_items} items: add a level or enlarge one."
        )
    first_batch = min(config["rqvae_batch_size"], n_items)
    if first_batch < max(sizes):
        raise ValueError(
            f"rqvae_codebook_sizes={sizes}: k-means initialises a codebook of {max(sizes)} codes "
            f"from the first batch of {first_batch} items (rqvae_batch_size="
            f"{config['rqvae_batch_size']}, {n_items} items); lower the codebook sizes."
        )


def _train_epoch(model, optimizer, scheduler, embeddings, config, shuffler):
    """One pass over ``embeddings`` in shuffled batches; ``(mean loss, mean reconstruction)``."""
    totals = torch.zeros(2)
    batches = torch.randperm(len(embeddings), generator=shuffler).split(config["rqvae_batch_size"])
    for rows in batches:
        batch = embeddings[rows]
        decoded, quantisation_loss, _ = model(batch, config["rqvae_sinkhorn_epsilons"])
        reconstruction = F.mse_loss(decoded, batch)
        loss = reconstruction + config["rqvae_quant_loss_weight"] * quantisation_loss
        if not torch.isfinite(loss):  # LC-Rec's _check_nan: a diverged run must not index items
            raise ValueError(f"the RQ-VAE loss is {loss.item()}: lower rqvae_learning_rate.")
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP_NORM)
        optimizer.step()
        scheduler.step()
        totals += torch.tensor([loss.item(), reconstruction.item()])
    return (totals / len(batches)).tolist()


def train_rqvae(embeddings, config):
    """An RQ-VAE trained on ``embeddings`` (float ``[items, dim]``, CPU) for ``rqvae_epochs``
    epochs (``index/trainer.py``); deterministic for ``seed``, and the caller's random state is left
    as it was. Returned in eval mode."""
    check_capacity(len(embeddings), config)
    epochs, seed = config["rqvae_epochs"], config["seed"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RQVAE(embeddings.shape[1], config)
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config["rqvae_learning_rate"],
            weight_decay=config["rqvae_weight_decay"],
        )
        steps = math.ceil(len(embeddings) / config["rqvae_batch_size"])
        scheduler = get_linear_schedule_with_warmup(
            optimizer, config["rqvae_warmup_epochs"] * steps, epochs * steps
        )
        shuffler = torch.Generator().manual_seed(seed)
        report_every = max(1, epochs // REPORTS_PER_TRAINING)
        model.train()
        for epoch in range(1, epochs + 1):
            loss, reconstruction = _train_epoch(
                model, optimizer, scheduler, embeddings, config, shuffler
            )
            if epoch % report_every == 0 or epoch == epochs:
                getLogger().info(
                    f"RQ-VAE epoch {epoch}/{epochs}: loss {loss:.6f}, "
                    f"reconstruction {reconstruction:.6f}"
                )
    return model.eval()


def collision_rate(codes):
    """LC-Rec's: the share of items whose code another item already has."""
    return 1 - len(torch.unique(codes, dim=0)) / len(codes)


def colliding_groups(codes):
    """The row groups (index tensors, by code) that share a code with another row."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    shared = torch.nonzero(counts[inverse] > 1).flatten()
    shared = shared[torch.argsort(inverse[shared], stable=True)]
    sizes = torch.unique_consecutive(inverse[shared], return_counts=True)[1]
    return list(shared.split(sizes.tolist()))


def repair_epsilons(epsilons):
    """The Sinkhorn epsilon per level in the repair: ``rqvae_sinkhorn_epsilons``, the last level at
    ``LAST_LEVEL_REPAIR_EPSILON`` where it is 0 (``generate_indices.py``)."""
    epsilons = [float(epsilon) for epsilon in epsilons]
    if epsilons[-1] <= 0:
        epsilons[-1] = LAST_LEVEL_REPAIR_EPSILON
    return epsilons


def _last_level_distances(model, latents, codes):
    """Each row's squared distance to every code of the last level, from the residual its earlier
    levels' codes leave."""
    residual = latents.clone()
    for level, codebook in enumerate(list(model.codebooks)[:-1]):
        residual -= codebook[codes[:, level]]
    return squared_distances(residual, model.codebooks[-1])


def _prefix_groups(codes, last_size, sizes):
    """Each row's prefix group (the rows with its codes of every level but the last); a prefix with
    more rows than the last level has codes is refused: no repair can separate them."""
    if codes.shape[1] == 1:
        prefix_of = torch.zeros(len(codes), dtype=torch.long)
    else:
        prefix_of = torch.unique(codes[:, :-1], dim=0, return_inverse=True)[1]
    counts = torch.bincount(prefix_of)
    if counts.max() > last_size:
        crowded = codes[torch.nonzero(prefix_of == counts.argmax())[0, 0], :-1].tolist()
        raise ValueError(
            f"rqvae_codebook_sizes={list(sizes)}: {counts.max().item()} items share the codes "
            f"{crowded} of the first {codes.shape[1] - 1} levels, more than the {last_size} codes "
            "of the last level (often items with identical texts); enlarge the last level."
        )
    return prefix_of


def resolve_collisions(model, latents, codes):
    """``codes`` with no two rows equal: within each prefix group holding a collision, every row
    keeps its last-level code unless an earlier row (by item) holds it, and each such row then takes
    the nearest last-level code (by distance of its residual) no row of the group holds. Distinct
    prefixes, or distinct last codes within one, make every code distinct; a free code exists as no
    prefix holds more rows than the last level's codes (``_prefix_groups`` refuses that)."""
    sizes = [len(codebook) for codebook in model.codebooks]
    prefix_of = _prefix_groups(codes, sizes[-1], sizes)
    colliding = torch.cat([torch.zeros(0, dtype=torch.long), *colliding_groups(codes)])
    if not len(colliding):
        return codes
    codes = codes.clone()
    nearest_first = torch.argsort(_last_level_distances(model, latents, codes), dim=1, stable=True)
    for prefix in torch.unique(prefix_of[colliding]).tolist():
        taken, movers = set(), []
        for row in torch.nonzero(prefix_of == prefix).flatten().tolist():
            code = int(codes[row, -1])
            if code in taken:
                movers.append(row)
            else:
                taken.add(code)
        for row in movers:
            free = next(c for c in nearest_first[row].tolist() if c not in taken)
            codes[row, -1] = free
            taken.add(free)
    return codes


@torch.no_grad()
def rqvae_codes(model, embeddings, config):
    """Int64 ``[items, levels]`` codes of ``embeddings`` by the trained ``model``, no two equal: the
    nearest code at every level; then up to ``rqvae_collision_rounds`` rounds re-assigning each
    colliding group with Sinkhorn at the levels of positive ``repair_epsilons`` (LC-Rec's uniform
    semantic mapping); then ``resolve_collisions`` for what still collides (the guarantee)."""
    model.eval()
    latents = model.encoder(embeddings)
    levels = len(model.codebooks)
    codes = model.quantise(latents, [0.0] * levels)[2]
    before = collision_rate(codes)
    epsilons = repair_epsilons(config["rqvae_sinkhorn_epsilons"])
    for _ in range(config["rqvae_collision_rounds"]):
        groups = colliding_groups(codes)
        if not groups:
            break
        for rows in groups:
            codes[rows] = model.quantise(latents[rows], epsilons)[2]
    after_sinkhorn = collision_rate(codes)
    codes = resolve_collisions(model, latents, codes)
    getLogger().info(
        f"RQ-VAE item codes: collision rate {before:.4f} by nearest codes, {after_sinkhorn:.4f} "
        f"after the Sinkhorn rounds, {collision_rate(codes):.4f} after the repair"
    )
    return codes
