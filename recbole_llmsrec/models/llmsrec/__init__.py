"""LLM-SRec ("Lost in Sequence", KDD'25) as a RecBole model: see ``model.py`` and
docs/specs/llmsrec.md."""
