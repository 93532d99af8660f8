"""The Llama shapes the benchmarks build from a config (random weights, nothing downloaded), as
``LlamaConfig`` keyword arguments: the tiny offline shape and the LLMs of the papers' defaults."""

TINY_LLAMA = dict(  # the shape of recbole_llmsrec.tools.tiny_llm's Llama, 64 wide
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
PAPER_LLAMAS = {
    # HLLM-1B's Item and User LLMs
    "TinyLlama-1.1B": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        vocab_size=32000,
    ),
    # HLLM-7B's LLMs and LC-Rec's huggyllama/llama-7b
    "Llama-2-7B": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    # LLM-SRec's LLM
    "Llama-3.2-3B": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
}
