"""Writes a tiny random-weight llama GGUF (a few hundred KB) that llama.cpp loads and chats with.

Two layers, width 64, an SPM ("llama") vocabulary of the three specials, the 256 byte-fallback
tokens and a few dozen words, and a chat template, so `create_chat_completion` works end to end.
The text it writes is nonsense, but it is real llama.cpp generation, token by token.

The output rows of every token but the words are zero: their logit is then exactly 0 while the
best word's logit is almost surely positive, so greedy sampling never picks EOS (the reply runs to
max_tokens, which is what cancellation tests need) and never emits half a UTF-8 byte sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = (
    "hello world good morning friend how are you today fine thanks tea coffee rain sun cloud "
    "river stone tree bird song quiet music walk garden book story light night small warm blue "
    "green yes no maybe later soon again here there"
).split()
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
EMBED = 64
HEADS = 4
FFN = 128
LAYERS = 2
CONTEXT = 512


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types in llama.cpp's SPM layout (specials, bytes, then pieces)."""
    import gguf

    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{byte:02X}>" for byte in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += ["\u2581" + word for word in WORDS]
    types += [gguf.TokenType.NORMAL] * len(WORDS)
    scores = [0.0] * 259 + [-float(i) for i in range(len(WORDS))]
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama(path: Path, seed: int = 7) -> Path:
    """Writes the model to `path` and returns it."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary()
    vocab = len(tokens)

    def weights(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("convers-tiny-test-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    output = weights(vocab, EMBED, scale=1.0)
    output[: vocab - len(WORDS)] = 0.0  # see the module docstring: only words can win
    # numpy shapes are ggml's dimensions reversed: (rows, columns) = (outputs, inputs).
    writer.add_tensor("token_embd.weight", weights(vocab, EMBED, scale=1.0))
    for layer in range(LAYERS):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(prefix + name + ".weight", weights(EMBED, EMBED))
        writer.add_tensor(prefix + "ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(prefix + "ffn_gate.weight", weights(FFN, EMBED))
        writer.add_tensor(prefix + "ffn_up.weight", weights(FFN, EMBED))
        writer.add_tensor(prefix + "ffn_down.weight", weights(EMBED, FFN))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":  # handy for poking at it by hand: python -m tests.tiny_gguf /tmp/tiny.gguf
    import sys

    print(write_tiny_llama(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf")))
