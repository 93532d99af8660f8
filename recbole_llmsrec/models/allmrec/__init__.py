"""A-LLMRec (KDD'24) as a RecBole model: see ``model.py`` and docs/specs/allmrec.md."""
