"""A-LLMRec's own metric, for comparing with the paper: free greedy generation, Hit@1 among 1 + 19.

    python -m recbole_llmsrec.models.allmrec.paper_metric saved/ALLMRec-<time>.pth [--max-users
    10000]

Per test user (seeded sample beyond ``--max-users``): the last 10 items, 20 candidates (the test
item and 19 seeded unseen items); the greedy answer's first double-quoted text, normalised, must
EXACTLY match a candidate title (the original matched substrings: "Up" hit any answer containing
"up").
"""

import argparse
import random
import re
import sys

from recbole.data import data_preparation
from recbole.utils import init_seed

from recbole_llmsrec import recbole_fixes
from recbole_llmsrec.checkpoints import load_checkpoint
from recbole_llmsrec.data.dataset import create_dataset
from recbole_llmsrec.registry import get_model


def normalise(title):
    title = " ".join(title.lower().split())
    return title.strip(" \"'").rstrip(".,;:!?").strip()


def extract_answer(text):
    quoted = re.search(r'"([^"]*)"', text)
    return normalise(quoted.group(1) if quoted else text)


def matched_candidates(answer, candidates, titles):
    """The candidates whose normalised title equals the answer exactly."""
    return [c for c in candidates if normalise(titles[c]) == answer]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="an ALLMRec checkpoint written by run_recbole")
    parser.add_argument("--max-users", type=int, default=10000)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--num-negatives", type=int, default=19)
    args = parser.parse_args(argv)

    recbole_fixes.install()  # the checkpoint's config is unpickled, not built: no Config did it
    checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint["config"]
    sys.argv = sys.argv[:1]
    init_seed(config["seed"], config["reproducibility"])
    train_data, _, test_data = data_preparation(config, create_dataset(config))
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()

    rows = test_data._dataset  # a row's lists are gathered when it is indexed (data.sequences)
    rng = random.Random(config["seed"])
    users = list(range(len(rows)))
    if len(users) > args.max_users:
        users = sorted(rng.sample(users, args.max_users))
    hits = unmatched = shared_target = 0
    for index in users:
        row = rows[[index]].to(config["device"])
        target = int(row[model.ITEM_ID][0])
        seen = set(model.history_matrix[int(row[model.USER_ID][0])].indices.tolist())
        seen |= set(row[model.ITEM_SEQ][0].tolist()) | {0, target}
        negatives = []
        while len(negatives) < args.num_negatives:
            item = rng.randrange(1, model.n_items)
            if item not in seen and item not in negatives:
                negatives.append(item)
        candidates = model.candidate_order([target] + negatives)
        answer = extract_answer(model.generate_answer(row, candidates, args.max_new_tokens))
        matched = matched_candidates(answer, candidates, model.titles)
        shared_target += (
            len(matched_candidates(normalise(model.titles[target]), candidates, model.titles)) > 1
        )
        unmatched += not matched
        hits += target in matched
    n = len(users)
    print(
        f"users: {n}\nHit@1 (exact normalised title match): {hits / n:.4f}\n"
        f"answers matching no candidate: {unmatched / n:.4f}\n"
        f"users whose target title is shared by another candidate: {shared_target}"
    )
    return hits / n


if __name__ == "__main__":
    main()
