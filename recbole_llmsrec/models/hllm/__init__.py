"""HLLM (ByteDance) as a RecBole model: see ``model.py`` and docs/specs/hllm.md."""
