"""Item indices (``models.generative``): LC-Rec's RQ-VAE codes, unique and seeded, repaired where
Sinkhorn cannot separate items; P5's sequential, random and collaborative indexing; the checked
JSON cache; ``build_item_index`` on RecBole's ml-100k."""

import json
import logging
import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_llmsrec import Config
from recbole_llmsrec.data import sequences
from recbole_llmsrec.data.dataset import UserSequenceDataset, create_dataset
from recbole_llmsrec.models.generative import item_index, rqvae
from recbole_llmsrec.models.generative.index_settings import INDEX_SETTINGS, check_index_settings
from recbole_llmsrec.models.generative.item_index import SCHEMES, build_item_index
from recbole_llmsrec.settings import SettingError

DEFAULTS = {setting.name: setting.default for setting in INDEX_SETTINGS}
TINY_RQVAE = {
    **dict(seed=7, rqvae_hidden_sizes=[32], rqvae_code_size=8, rqvae_epochs=10),
    **dict(rqvae_batch_size=64, rqvae_warmup_epochs=2, rqvae_kmeans_iterations=20),
    # the last level above the largest prefix group (~20 of these 200 items share their 2 codes)
    **dict(rqvae_codebook_sizes=[8, 8, 32], rqvae_sinkhorn_epsilons=[0.0, 0.0, 0.003]),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: more threads only add synchronisation (ten-fold on a busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class IndexConfig(dict):
    """The keys ``build_item_index`` reads, over a RecBole ``Config`` (``config``) for the rest:
    no model declares the index keys in these tests."""

    def __init__(self, config=None, **keys):
        super().__init__(keys)
        self.config = config

    def __missing__(self, key):
        if self.config is None:
            raise KeyError(key)
        return self.config[key]

    def but(self, **keys):
        return IndexConfig(self.config, **{**self, **keys})


def index_config(tmp_path, config=None, **keys):
    run = dict(seed=2020, single_spec=True, show_progress=False, trust_remote_code=False)
    run.update(checkpoint_dir=str(tmp_path / "saved"), device=torch.device("cpu"))
    return IndexConfig(config, **{**DEFAULTS, **run, **keys})


def rqvae_settings(**keys):
    return {**DEFAULTS, **TINY_RQVAE, **keys}


def random_embeddings(rows=200):
    return torch.randn(rows, 16, generator=torch.Generator().manual_seed(0))


def rqvae_item_codes(embeddings, config):
    return rqvae.rqvae_codes(rqvae.train_rqvae(embeddings, config), embeddings, config)


def distinct(codes):
    return len(torch.unique(torch.as_tensor(codes), dim=0)) == len(codes)


# ----- RQ-VAE -------------------------------------------------------------------------------------
def test_rqvae_codes_are_unique_in_range_and_the_same_for_a_seed():
    embeddings = random_embeddings()
    first = rqvae_item_codes(embeddings, rqvae_settings())
    other_seed = rqvae_item_codes(embeddings, rqvae_settings(seed=8))
    assert first.shape == (200, 3) and distinct(first) and distinct(other_seed)
    assert first.min() >= 0 and (first < torch.tensor([8, 8, 32])).all()
    assert torch.equal(first, rqvae_item_codes(embeddings, rqvae_settings()))
    assert not torch.equal(first, other_seed)


def test_training_leaves_the_callers_random_state_alone():
    expected = torch.manual_seed(123) and torch.rand(3)
    torch.manual_seed(123)
    rqvae.train_rqvae(random_embeddings(), rqvae_settings(rqvae_epochs=2))
    assert torch.equal(torch.rand(3), expected)


def test_identical_embeddings_which_sinkhorn_cannot_separate_still_get_distinct_codes():
    embeddings = random_embeddings()
    embeddings[1:6] = embeddings[0]  # six identical items: same distances, same Sinkhorn plan
    model = rqvae.train_rqvae(embeddings, config := rqvae_settings())
    with torch.no_grad():
        latents = model.encoder(embeddings)
        spread = model.quantise(latents[:6], rqvae.repair_epsilons([0.0, 0.0, 0.003]))[2]
        codes = rqvae.rqvae_codes(model, embeddings, config)
        distances = rqvae._last_level_distances(model, latents, codes)
    assert len(torch.unique(spread, dim=0)) == 1  # the uniform mapping leaves them colliding
    assert distinct(codes) and len(torch.unique(codes[:6, :2], dim=0)) == 1  # one prefix
    # rows 1-5 moved (row 0 kept its code), each to the nearest code no other item of the prefix
    # holds: every nearer code is held
    held = set(codes[(codes[:, :2] == codes[0, :2]).all(1), 2].tolist())
    for row in range(1, 6):
        nearer = torch.nonzero(distances[row] < distances[row, codes[row, 2]]).flatten()
        assert set(nearer.tolist()) <= held


def test_a_prefix_with_more_items_than_last_level_codes_is_refused():
    embeddings = random_embeddings(rows=40)
    embeddings[20:] = embeddings[0]  # 21 identical items share every level's code
    two_levels = {"rqvae_sinkhorn_epsilons": [0.0, 0.003]}
    with pytest.raises(ValueError, match=r"rqvae_codebook_sizes=\[8, 8\]: \d+ items share"):
        rqvae_item_codes(embeddings, rqvae_settings(rqvae_codebook_sizes=[8, 8], **two_levels))
    with pytest.raises(ValueError, match=r"rqvae_codebook_sizes=\[4, 4\] has 16 codes, fewer"):
        rqvae.train_rqvae(embeddings, rqvae_settings(rqvae_codebook_sizes=[4, 4], **two_levels))


def test_sinkhorn_spreads_a_skewed_assignment_over_the_codes():
    generator = torch.Generator().manual_seed(0)
    distances = 1 + torch.rand(64, 8, generator=generator)
    distances[:, 0] = 0.5 * torch.rand(64, generator=generator)  # code 0 is everyone's nearest
    by_argmin = torch.bincount(distances.argmin(1), minlength=8)
    by_sinkhorn = torch.bincount(rqvae.sinkhorn_codes(distances, 0.05, 50), minlength=8)
    assert by_argmin.max() == 64
    assert by_sinkhorn.max() <= 16 and (by_sinkhorn > 0).sum() >= 6
    # LC-Rec's 0.003 on centred distances: exp(1 / 0.003) does not overflow in the log domain
    assert rqvae.sinkhorn_codes(distances, 0.001, 50).unique().numel() > 1


# ----- sequential and random ---------------------------------------------------------------------
# each user's items in time order (the file lists them out of order); the last two are held out
SEQUENCES = {
    "u1": ["iC", "iA", "iB", "iD", "iE"],
    "u2": ["iB", "iF", "iA", "iG", "iH"],
    "u3": ["iE", "iC", "iI", "iJ", "iK"],
}


def with_fourth_user(training, held_out):
    """``SEQUENCES`` and a user u4 of items seen before: the same catalogue, the same ids."""
    return {**SEQUENCES, "u4": [*training, *held_out]}


def training_split(dataset, dataset_class=None, **settings):
    config = Config(model="SASRec", dataset=dataset, config_dict={"use_gpu": False, **settings})
    init_seed(config["seed"], config["reproducibility"])
    dataset = (dataset_class or type(create_dataset(config)))(config)
    return data_preparation(config, dataset)[0]._dataset


def tiny_split(tmp_path, user_items=SEQUENCES, dataset_class=None, name="tiny"):
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for user, items in user_items.items():
        timed = [f"{user}\t{item}\t5\t{100 + 10 * time}" for time, item in enumerate(items)]
        lines += timed[1::2] + timed[::2]
    (tmp_path / "data" / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / name / f"{name}.inter").write_text("\n".join(lines) + "\n")
    inter = {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    settings = dict(data_path=str(tmp_path / "data"), load_col=inter, MAX_ITEM_LIST_LENGTH=2)
    return training_split(name, dataset_class, train_neg_sample_args=None, **settings)


def build(tmp_path, split, scheme, base=256, **keys):
    config = index_config(tmp_path, item_index=scheme, item_index_codebook_size=base, **keys)
    return build_item_index(config, split)


def test_sequential_numbers_items_by_first_appearance_in_the_training_sequences(tmp_path):
    compact = sequences.CompactSequentialDataset
    for dataset_class in (compact, sequences.materialised(compact)):
        train = tiny_split(tmp_path, dataset_class=dataset_class)
        index = build(tmp_path, train, "sequential")
        assert index.codebook_sizes == (256,) and index.codes.shape == (12, 1)  # K >= n: 1 level
        by_number = sorted(range(1, 12), key=lambda item: index.codes[item, 0].item())
        # training: u1 C A B, u2 B F A, u3 E C I; items only held out (D G H J K) last, by id
        first_seen = "".join(train.id2token("item_id", item)[1] for item in by_number[:6])
        assert first_seen == "CABFEI"
        assert by_number[6:] == sorted(by_number[6:]) and index.codes[0].tolist() == [-1]
    codes = build(tmp_path, train, "sequential", base=2).codes
    assert codes.shape == (12, 4) and distinct(codes[1:])  # 11 items: 4 binary digits
    numbers = (codes[1:] * torch.tensor([8, 4, 2, 1])).sum(1)
    assert sorted(numbers.tolist()) == list(range(11))
    assert [codes[1:][numbers == n][0, :3].tolist() for n in (4, 5)] == [[0, 1, 0]] * 2


def test_training_sequences_agree_for_compact_materialised_and_trimmed_splits():
    compact = sequences.CompactSequentialDataset
    settings = dict(train_neg_sample_args=None, user_inter_num_interval="[0,30]")
    splits = [  # UserSequenceDataset: one training row per user, the rest in history_matrix
        training_split("ml-100k", dataset_class, MAX_ITEM_LIST_LENGTH=5, **settings)
        for dataset_class in (compact, sequences.materialised(compact), UserSequenceDataset)
    ]
    covered = sequences.covered_interactions(splits[0])  # untrimmed: every training interaction
    for users, items in map(item_index.training_sequences, splits):
        assert np.array_equal(users, covered[0]) and np.array_equal(items, covered[1])


def test_random_codes_are_a_seeded_permutation_without_collisions(tmp_path):
    train = tiny_split(tmp_path)
    codes = build(tmp_path, train, "random", base=3, seed=1).codes
    assert codes.shape == (12, 3)  # 11 items: 3 ternary digits
    assert sorted((codes[1:] * torch.tensor([9, 3, 1])).sum(1).tolist()) == list(range(11))
    assert torch.equal(build(tmp_path, train, "random", base=3, seed=1).codes, codes)
    assert not torch.equal(build(tmp_path, train, "random", base=3, seed=2).codes, codes)


# ----- collaborative ------------------------------------------------------------------------------
def test_collaborative_separates_disjoint_groups_and_pads_shorter_codes():
    # items 1-10 co-occur among users 0-5, items 11-13 among users 6-7; item 14 alone
    group = [[1, 2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9, 10], [1, 3, 8, 10], [2, 9], [5, 6]]
    baskets = group + [[11, 12], [12, 13], [14]]
    users = [user for user, basket in enumerate(baskets) for _ in basket]
    items = [item for basket in baskets for item in basket]
    matrix = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(len(baskets), 15))
    codes, sizes = item_index.collaborative_codes(matrix, base=4, seed=0)
    first = codes[:, 0]
    assert distinct(codes) and len(codes) == 14 and codes.shape[1] >= 3
    assert len(set(first[:10])) == 1 and len(set(first[10:13])) == 1 and first[0] != first[10]
    assert first[13] not in (first[0], first[10])
    # items 11-14 sit in groups of at most 4: two levels, padded with the filler 4
    assert (codes[10:, 2:] == 4).all() and sizes[0] == 4 and set(sizes[2:]) == {5}
    assert all(codes[:, level].max() < size for level, size in enumerate(sizes))
    assert np.array_equal(codes, item_index.collaborative_codes(matrix, base=4, seed=0)[0])


def test_collaborative_reads_the_training_split_only(tmp_path):
    # u4's validation and test items differ between the two datasets; its training items do not
    train = tiny_split(tmp_path, with_fourth_user(["iA", "iF", "iI"], ["iB", "iC"]), name="a")
    other = tiny_split(tmp_path, with_fourth_user(["iA", "iF", "iI"], ["iE", "iH"]), name="b")
    assert train.field2id_token["item_id"].tolist() == other.field2id_token["item_id"].tolist()
    codes = build(tmp_path / "a", train, "collaborative", base=2).codes
    assert torch.equal(codes, build(tmp_path / "b", other, "collaborative", base=2).codes)
    assert distinct(codes[1:]) and train.item_num == 12


# ----- the stored index ---------------------------------------------------------------------------
@pytest.fixture
def spy(monkeypatch):
    """Counts the calls of an item_index function (by name), still running it."""

    def watch(name):
        calls, real = [], getattr(item_index, name)
        monkeypatch.setattr(item_index, name, lambda *a, **k: calls.append(1) or real(*a, **k))
        return calls

    return watch


def stored_files(tmp_path):
    return sorted((tmp_path / "saved" / "item_index").glob("*"))


def test_a_second_build_reads_the_stored_index(tmp_path, spy, caplog):
    train, computed = tiny_split(tmp_path), spy("random_codes")
    first = build(tmp_path, train, "random", base=4)
    with caplog.at_level(logging.INFO):
        second = build(tmp_path, train, "random", base=4)
    assert len(computed) == 1 and torch.equal(first.codes, second.codes)
    assert second.codebook_sizes == first.codebook_sizes == (4, 4)
    [path] = stored_files(tmp_path)
    assert f"Item index read from {path}" in caplog.text
    assert path.name.startswith("random-") and len(path.stem) == len("random-") + 16
    stored = json.loads(path.read_text())
    assert stored["item_tokens"] == train.field2id_token["item_id"][1:].tolist()
    assert stored["codes"] == first.codes[1:].tolist()


def test_a_changed_setting_seed_or_training_data_recomputes(tmp_path, spy):
    computed = spy("sequential_codes")
    train = tiny_split(tmp_path, with_fourth_user(["iA", "iF", "iI"], ["iB", "iC"]), name="a")
    for base, seed in ((4, 2020), (5, 2020), (4, 1)):
        build(tmp_path, train, "sequential", base=base, seed=seed)
    assert len(computed) == 3 and len(stored_files(tmp_path)) == 3
    # the same training pairs in another time order; the same training with other held-out items
    reordered = tiny_split(tmp_path, with_fourth_user(["iA", "iI", "iF"], ["iB", "iC"]), name="b")
    held_out = tiny_split(tmp_path, with_fourth_user(["iA", "iF", "iI"], ["iE", "iH"]), name="c")
    build(tmp_path, reordered, "sequential", base=4)
    assert len(computed) == 4
    build(tmp_path, held_out, "sequential", base=4)  # the training split is unchanged: read
    assert len(computed) == 4 and len(stored_files(tmp_path)) == 4


@pytest.mark.parametrize(
    "tamper, named",
    [
        (lambda stored: "{not json", "unreadable"),
        (lambda stored: {**stored, "codes": [stored["codes"][0]] * 11}, "two items share a code"),
        (lambda stored: {**stored, "codes": [[9, 9]] + stored["codes"][1:]}, "outside"),
        (lambda stored: {**stored, "codes": [[True, 0]] + stored["codes"][1:]}, "integers"),
        (lambda stored: {**stored, "codes": stored["codes"][1:]}, "a code for each"),
        (lambda stored: {**stored, "item_tokens": stored["item_tokens"][::-1]}, "item tokens"),
        (lambda stored: {**stored, "identity": {}}, "identity"),
        (lambda stored: [stored], "not a JSON object"),
    ],
)
def test_a_tampered_file_is_named_and_recomputed(tmp_path, spy, caplog, tamper, named):
    train, computed = tiny_split(tmp_path), spy("random_codes")
    expected = build(tmp_path, train, "random", base=4)
    [path] = stored_files(tmp_path)
    changed = tamper(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with caplog.at_level(logging.WARNING):
        again = build(tmp_path, train, "random", base=4)
    assert len(computed) == 2 and torch.equal(again.codes, expected.codes)
    assert f"Item index {path} is not used, recomputing: " in caplog.text and named in caplog.text
    assert json.loads(path.read_text())["codes"] == expected.codes[1:].tolist()  # rewritten


def test_other_ranks_read_what_rank_0_wrote_and_compute_nothing(tmp_path, spy, monkeypatch):
    train = tiny_split(tmp_path)
    expected = build(tmp_path, train, "sequential", base=4)
    [path] = stored_files(tmp_path)
    identity = json.loads(path.read_text())["identity"]
    computed, waits = spy("sequential_codes"), []
    monkeypatch.setattr(item_index, "rank", lambda: 1)
    monkeypatch.setattr(item_index, "is_distributed", lambda config: not config["single_spec"])
    monkeypatch.setattr(item_index, "wait_for_rank0", lambda: waits.append(1))
    monkeypatch.setattr(item_index, "from_rank0", lambda config, obj: (str(path), identity))
    index = build(tmp_path, train, "sequential", base=4, single_spec=False)
    assert torch.equal(index.codes, expected.codes) and waits == [1] and not computed
    path.write_text("{}")
    with pytest.raises(RuntimeError, match="the item index rank 0 wrote"):
        build(tmp_path, train, "sequential", base=4, single_spec=False)


# ----- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("rqvae_sinkhorn_epsilons", [0.0, 0.003], "one number per level"),
        ("rqvae_sinkhorn_epsilons", [0.0, -1.0, 0.0, 0.0], "numbers >= 0"),
        ("rqvae_codebook_sizes", [256, 0], "positive integers"),
        ("rqvae_codebook_sizes", [], "non-empty"),
        ("rqvae_hidden_sizes", [64, 2.5], "positive integers"),
        ("item_index", "semantic", "one of 'rqvae'"),
        ("item_index_codebook_size", 1, "an integer >= 2"),
        ("rqvae_encoder_dtype", "fp8", "one of"),
    ],
)
def test_index_settings_are_refused_with_key_value_and_rule(key, value, allowed):
    settings = {**DEFAULTS, key: value}
    if key == "rqvae_codebook_sizes":
        settings["rqvae_sinkhorn_epsilons"] = [0.0] * len(value)
    pattern = rf"^{re.escape(key)}={re.escape(repr(value))} is not allowed: it must be .*"
    with pytest.raises(SettingError, match=pattern + re.escape(allowed)):
        check_index_settings(settings)
    check_index_settings(DEFAULTS)


# ----- on RecBole's ml-100k -----------------------------------------------------------------------
@pytest.fixture
def ml100k_train(toy_model):
    settings = dict(train_neg_sample_args=None, user_inter_num_interval="[0,30]", use_gpu=False)
    config = Config(model=toy_model, dataset="ml-100k", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    return config, data_preparation(config, create_dataset(config))[0]._dataset


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "rqvae"])
def test_every_p5_scheme_indexes_ml100k_without_collisions(ml100k_train, tmp_path, scheme):
    config, train = ml100k_train
    settings = index_config(tmp_path, config, item_index=scheme, item_index_codebook_size=32)
    codes = (index := build_item_index(settings, train)).codes
    assert index.scheme == scheme and codes.shape[0] == train.item_num
    assert (codes[0] == -1).all() and distinct(codes[1:])
    assert ((codes[1:] >= 0) & (codes[1:] < torch.tensor(index.codebook_sizes))).all()


def test_rqvae_indexes_ml100k_from_minilm_embeddings_and_reuses_them(
    ml100k_train, tmp_path, minilm_path, spy, monkeypatch
):
    config, train = ml100k_train
    encoder = dict(rqvae_encoder_path=minilm_path, rqvae_encoder_dtype="float32")
    # one epoch: longer, these tiny networks crowd most items into a few prefixes (LC-Rec trains
    # 10,000 epochs with a 50-epoch warm-up); the guaranteed repair would refuse them
    tiny = dict(rqvae_codebook_sizes=[32, 32, 32], rqvae_epochs=1, rqvae_batch_size=256)
    settings = {**TINY_RQVAE, **encoder, **tiny, "rqvae_encoder_max_length": 32}
    index_settings = index_config(tmp_path, config, item_index="rqvae", **settings)
    trained = spy("train_rqvae")
    index = build_item_index(index_settings, train)
    assert index.codebook_sizes == (32, 32, 32) and index.codes.shape == (train.item_num, 3)
    assert (index.codes[0] == -1).all() and distinct(index.codes[1:])
    assert len(list((tmp_path / "saved" / "item_embedding_cache").glob("*.pt"))) == 1
    monkeypatch.setattr(rqvae, "mean_pooled_embeddings", lambda *_: pytest.fail("re-encoded"))
    assert torch.equal(build_item_index(index_settings, train).codes, index.codes)
    assert len(trained) == 1  # the embeddings from their cache, the codes from the JSON file
    again = build_item_index(index_settings.but(rqvae_beta=0.3), train)
    assert len(trained) == 2 and distinct(again.codes[1:])
