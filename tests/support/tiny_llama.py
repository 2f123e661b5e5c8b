"""Write a tiny Llama model directory (config and tokenizer, no weights) for vLLM's ``--load-format dummy``.

Run with the Python of the vLLM environment, which has ``tokenizers``:

    .venv-vllm/bin/python tests/support/tiny_llama.py DIRECTORY

LlamaForCausalLM with hidden size 128, 2 layers, 2 heads of 64 and a WordLevel tokenizer over the load
generator's prompt words (one token per word, no BOS), so nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

SPECIAL = ("<unk>", "<s>", "</s>")
MAX_LEN = 256


def write(directory: Path, words: list[str]) -> int:
    """Write config.json, tokenizer.json and tokenizer_config.json; return the vocabulary size."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate([*SPECIAL, *dict.fromkeys(words)])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": MAX_LEN,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": len(vocab),
        "max_position_embeddings": MAX_LEN,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return len(vocab)


if __name__ == "__main__":
    target, vocabulary = Path(sys.argv[1]), sys.argv[2].split()
    print(write(target, vocabulary))
