"""The evaluation protocol of every model run through the plugin, RecBole's and ours, at the loaders
and the trainer, never inside a model (README "Evaluation protocol"):

- ``loaders``: RecBole's split with the protocol's loaders (``data_preparation``):
  ``eval_mask_history`` (full sort: the user's earlier items score -inf; RecBole's sequential loader
  masks nothing; the target is never masked, even as a repeat: the HLLM original masked it, every
  repeat a miss), ``eval_neg_exclude_history`` (seeded negatives outside the user's history;
  RecBole excluded only the target, the originals re-drew unseeded ones), ``eval_shuffle_history``
  (each history permuted, seeded, at evaluation only) and ``eval_item_groups`` (each target's
  training users, for per-group metrics);
- ``sampler``: the seeded negative sampler, the same candidates for every model, validation and
  number of processes;
- ``histories``: the per-user item sets the protocol reads;
- ``scoring``: how the trainer scores a batch (one forward per user in sampled modes, RecBole: one
  per user and candidate; staged full sorts told what the protocol excludes);
- ``results``: the collected rows (put together across ranks) and the metrics (per item group, per
  row);
- ``protocol``: the protocol in words, for the log.
"""
