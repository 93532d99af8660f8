"""This plugin's models; ``get_model(name)`` looks here before RecBole."""

from recbole_llmsrec.model.allmrec import ALLMRec
from recbole_llmsrec.model.hllm import HLLM
from recbole_llmsrec.model.llmsrec import LLMSRec

__all__ = ["ALLMRec", "HLLM", "LLMSRec"]
