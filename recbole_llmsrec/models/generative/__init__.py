"""Pieces shared by generative recommenders: item indices, the index trie, constrained beam
search."""
