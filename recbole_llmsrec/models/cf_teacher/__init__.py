"""The LLM-with-CF-teacher family (LLM-SRec, A-LLMRec), shared by their two model folders: stage 0,
the frozen RecBole teacher (``stage0``); the base class of such models (``model``); their trainer
(``trainer``); their shared keys (``settings``)."""
