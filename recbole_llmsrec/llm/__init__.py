"""The LLM pieces the models share: loading (``loading``), frozen-encoder embedding caches
(``embedding_cache``) and small layers (``layers``)."""
