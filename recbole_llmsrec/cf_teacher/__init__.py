"""Stage 0 of the LLM-with-CF-teacher family (LLM-SRec, A-LLMRec): the frozen RecBole teacher
(``stage0``), the base class of such models (``model``), their trainer (``trainer``) and their
shared keys (``settings``)."""
