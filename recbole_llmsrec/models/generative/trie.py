"""A trie of item codes held as tensors, for generation constrained to existing items.

Every item has a code, one value per level (``codes[item, l]`` in ``range(codebook_sizes[l])``).
A node of level ``l`` is a distinct code prefix of length ``l`` (level 0: the single root, node 0);
the nodes of level ``l + 1`` are the children of those of level ``l``, and after the last level the
children are the items themselves. Per level the edges are stored CSR-like, sorted by (parent node,
value): ``offsets[l]`` (a node's first edge), ``child_values[l]``, ``child_nodes[l]`` and
``edge_keys[l] = parent * codebook_sizes[l] + value`` (sorted, for lookups with ``searchsorted``).
A node of level ``l + 1 < levels`` is numbered by its edge, so there ``child_nodes[l]`` is
``arange``; at the last level it holds the item ids.
"""

import copy

import torch

_INT64_LIMIT = 2**62  # mixed-radix keys of code prefixes stay below it (int64, with room)
# the trie's per-level tensors, all moved by IndexTrie.to
_TENSOR_LISTS = (
    "item_node",
    "items_per_node",
    "offsets",
    "child_values",
    "child_nodes",
    "edge_keys",
)


def _prefix_ranks(prefixes, codebook_sizes):
    """Each row's rank among the distinct rows of ``prefixes [n, k]``, in lexicographic order."""
    width = 1
    for size in codebook_sizes[: prefixes.shape[1]]:
        width *= size
    if width >= _INT64_LIMIT:  # too many prefixes for one int64 key: compare rows instead
        return torch.unique(prefixes, dim=0, return_inverse=True)[1]
    key = torch.zeros(prefixes.shape[0], dtype=torch.long)
    for level in range(prefixes.shape[1]):  # mixed radix: the key's order is the codes' order
        key = key * codebook_sizes[level] + prefixes[:, level]
    return torch.unique(key, return_inverse=True)[1]


class TrieExclusions:
    """Per user, the trie nodes all of whose items are excluded: ``keys[k]`` (sorted int64) holds
    ``user * num_nodes[k] + node`` for every such node of level ``k`` (``keys[0]`` is unused: the
    root is never removed); made by :meth:`IndexTrie.exclusions`."""

    def __init__(self, num_users, keys):
        self.num_users = num_users
        self.keys = keys

    def contains(self, level, users, nodes, num_nodes):
        """Bool, per pair: whether node ``nodes[i]`` of ``level`` is removed for ``users[i]``."""
        keys = self.keys[level]
        if keys.numel() == 0:
            return torch.zeros_like(nodes, dtype=torch.bool)
        query = users * num_nodes + nodes
        found = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        return keys[found] == query


class IndexTrie:
    """The trie of the item codes ``codes`` (int64 ``[n_items, levels]``; row 0, the padding item,
    and any row with a negative value are not items). Codes must be collision-free."""

    def __init__(self, codes, codebook_sizes):
        codes = torch.as_tensor(codes, dtype=torch.long).cpu()
        self.codebook_sizes = tuple(int(size) for size in codebook_sizes)
        self.levels = len(self.codebook_sizes)
        self.n_items = codes.shape[0]
        if codes.dim() != 2 or codes.shape[1] != self.levels:
            raise ValueError(f"codes {tuple(codes.shape)} do not have {self.levels} levels")
        valid = (codes >= 0).all(-1)
        valid[0] = False
        items = valid.nonzero().squeeze(-1)
        if items.numel() == 0:
            raise ValueError("codes hold no item (row 0 is the padding item)")
        item_codes = codes[items]
        if (item_codes >= torch.tensor(self.codebook_sizes)).any():
            raise ValueError("a code value is outside its level's codebook")
        # ranks[k][i]: the lexicographic rank of item i's prefix of length k among the distinct ones
        ranks = [torch.zeros(items.numel(), dtype=torch.long)]
        ranks += [
            _prefix_ranks(item_codes[:, :k], self.codebook_sizes) for k in range(1, self.levels + 1)
        ]
        if int(ranks[-1].max()) + 1 != items.numel():
            raise ValueError("two items have the same code")
        # item_node[k][item]: the level-k node above the item (-1: not an item); level `levels`
        # is the item itself
        self.item_node = []
        for k in range(self.levels):
            self.item_node.append(torch.full((self.n_items,), -1, dtype=torch.long))
            self.item_node[k][items] = ranks[k]
        self.item_node.append(torch.where(valid, torch.arange(self.n_items), -1))
        inner = [int(ranks[k].max()) + 1 for k in range(1, self.levels)]
        self.num_nodes = [1] + inner + [self.n_items]
        self.items_per_node = [
            torch.bincount(self.item_node[k][items], minlength=self.num_nodes[k])
            for k in range(self.levels + 1)
        ]
        self._build_edges(items, item_codes, ranks)

    def _build_edges(self, items, item_codes, ranks):
        """The CSR edges of every level (see the module's docstring): one edge per distinct prefix
        of length ``level + 1``, in the prefixes' lexicographic order, i.e. by (parent, value)."""
        self.offsets, self.child_values, self.child_nodes, self.edge_keys = [], [], [], []
        for level in range(self.levels):
            num_edges = int(ranks[level + 1].max()) + 1
            # one item under each edge stands for it (all of them share the edge's prefix)
            witness = torch.zeros(num_edges, dtype=torch.long)
            witness.scatter_(0, ranks[level + 1], torch.arange(items.numel()))
            parents = ranks[level][witness]
            values = item_codes[witness, level]
            last = level + 1 == self.levels
            self.child_nodes.append(items[witness] if last else torch.arange(num_edges))
            counts = torch.bincount(parents, minlength=self.num_nodes[level])
            self.offsets.append(torch.cat([counts.new_zeros(1), counts.cumsum(0)]))
            self.child_values.append(values)
            self.edge_keys.append(parents * self.codebook_sizes[level] + values)

    def to(self, device):
        """A copy of the trie with every tensor on ``device``."""
        moved = copy.copy(self)
        for name in _TENSOR_LISTS:
            setattr(moved, name, [tensor.to(device) for tensor in getattr(self, name)])
        return moved

    def _edges_of(self, level, nodes):
        """``(rows, edges)``: every edge leaving ``nodes[row]`` (negative nodes have none)."""
        live = nodes >= 0
        node = nodes.clamp(min=0)
        start = self.offsets[level][node]
        counts = torch.where(live, self.offsets[level][node + 1] - start, 0)
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), counts)
        before = counts.cumsum(0) - counts  # edges of the earlier rows
        edges = start[rows] + torch.arange(rows.numel(), device=nodes.device) - before[rows]
        return rows, edges

    def allowed(self, level, nodes, removed=None):
        """Bool ``[len(nodes), codebook_sizes[level]]``: the values that extend node ``nodes[i]``
        of ``level`` toward at least one item (one not removed for the row's user, with
        ``removed`` from :meth:`exclusions`: then ``nodes`` holds the users' rows in order, the
        same number per user). A negative node (a dead beam) allows nothing."""
        nodes = nodes.reshape(-1)
        rows, edges = self._edges_of(level, nodes)
        children = self.child_nodes[level][edges]
        if removed is not None:
            if nodes.numel() % removed.num_users:
                raise ValueError(f"{nodes.numel()} rows are not the same number per user")
            users = rows // (nodes.numel() // removed.num_users)
            kept = ~removed.contains(level + 1, users, children, self.num_nodes[level + 1])
            rows, edges = rows[kept], edges[kept]
        mask = torch.zeros(
            nodes.numel(), self.codebook_sizes[level], dtype=torch.bool, device=nodes.device
        )
        mask[rows, self.child_values[level][edges]] = True
        return mask

    def step(self, level, nodes, values):
        """The children (node ids of level ``level + 1``; after the last level, item ids) reached
        from ``nodes`` by ``values``; -1 where the node has no such child or is negative."""
        keys = self.edge_keys[level]
        query = nodes * self.codebook_sizes[level] + values
        found = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        hit = (keys[found] == query) & (nodes >= 0)
        return torch.where(hit, self.child_nodes[level][found], -1)

    def exclusions(self, excluded):
        """What :meth:`allowed` takes as ``removed``: for each user ``b`` (row of the bool
        ``excluded [B, n_items]``), the nodes of every level all of whose items are excluded.
        Built from the excluded (user, item) pairs: per level, their keys ``user * num_nodes +
        node`` are counted (``unique``) and a node is removed when its count is its item count,
        so memory is O(excluded pairs x levels), never ``[B, nodes]``."""
        users, items = excluded.to(self.item_node[0].device).nonzero(as_tuple=True)
        is_item = self.item_node[self.levels][items] >= 0
        users, items = users[is_item], items[is_item]
        keys = [users.new_zeros(0)]
        for k in range(1, self.levels + 1):
            node = self.item_node[k][items]
            unique, counts = torch.unique(users * self.num_nodes[k] + node, return_counts=True)
            everything = counts == self.items_per_node[k][unique % self.num_nodes[k]]
            keys.append(unique[everything])
        return TrieExclusions(excluded.shape[0], keys)
