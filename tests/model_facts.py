"""The facts our GPU recipes rely on, one row per model they name, each from the model's card and config files on
the Hub (read by hand: nothing here downloads). tests/test_recipe_facts.py holds every recipe against them.

- `context`: the config's `max_position_embeddings` (tokens; what vLLM accepts as `max_model_len`).
- `vocab_rows`: the config's `vocab_size`, the embedding rows, padding included (Qwen pads 151,665-151,669 real
  tokens to 151,936 below 7B and to 152,064 from 7B up).
- `tokenizer`: models of one family tokenise any text to the same ids (their vocabularies differ by padding at
  most), so logit KD and on-policy scoring between them need no alignment.
- `think_tokens`: `<think>` and `</think>` are single tokens.
- `generation_prompt`: what the model's own chat template writes to open the assistant turn; it ends in
  `<think>\\n` for templates that open the think block themselves (QwQ-32B; DeepSeek-R1 since its 2025 template).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFacts:
    context: int
    vocab_rows: int
    tokenizer: str
    think_tokens: bool
    generation_prompt: str
    source: str


CHATML = "<|im_start|>assistant\n"
QWEN25 = "qwen2.5"  # 151,665 tokens: Qwen2.5, Qwen2.5-Math (the think tags are several tokens each)
QWEN_THINK = "qwen2.5+think"  # 151,669: Qwen2.5's plus <tool_response>, </tool_response>, <think>, </think>
LLAMA3 = "llama3"  # 128,256
DEEPSEEK_V3 = "deepseek-v3"  # 128,815 tokens in 129,280 rows
TOKENS = {QWEN25: 151665, QWEN_THINK: 151669, LLAMA3: 128256, DEEPSEEK_V3: 128815}
"""Tokens of each tokenizer family (its tokenizer.json's vocabulary plus added tokens)."""

FACTS: dict[str, ModelFacts] = {
    "deepseek-ai/DeepSeek-R1": ModelFacts(
        163840, 129280, DEEPSEEK_V3, True, "<｜Assistant｜><think>\n",
        "huggingface.co/deepseek-ai/DeepSeek-R1: config.json; tokenizer_config.json chat template (2025 update)",
    ),
    "Qwen/QwQ-32B": ModelFacts(
        40960, 152064, QWEN_THINK, True, CHATML + "<think>\n",
        "huggingface.co/Qwen/QwQ-32B: config.json, tokenizer.json (added tokens 151665-151668), chat template",
    ),
    "Qwen/Qwen3-32B": ModelFacts(
        40960, 151936, QWEN_THINK, True, CHATML,
        "huggingface.co/Qwen/Qwen3-32B: config.json; card: thinking mode, 32,768 native context",
    ),
    "Qwen/Qwen3-0.6B-Base": ModelFacts(32768, 151936, QWEN_THINK, True, CHATML, "huggingface.co/Qwen/Qwen3-0.6B-Base"),
    "Qwen/Qwen3-1.7B-Base": ModelFacts(32768, 151936, QWEN_THINK, True, CHATML, "huggingface.co/Qwen/Qwen3-1.7B-Base"),
    "Qwen/Qwen2.5-0.5B-Instruct": ModelFacts(
        32768, 151936, QWEN25, False, CHATML, "huggingface.co/Qwen/Qwen2.5-0.5B-Instruct: config.json"
    ),
    "Qwen/Qwen2.5-7B-Instruct": ModelFacts(
        32768, 152064, QWEN25, False, CHATML, "huggingface.co/Qwen/Qwen2.5-7B-Instruct: config.json"
    ),
    "Qwen/Qwen2.5-Math-1.5B": ModelFacts(
        4096, 151936, QWEN25, False, CHATML, "huggingface.co/Qwen/Qwen2.5-Math-1.5B: config.json (4k, RoPE 10k)"
    ),
    "Qwen/Qwen2.5-Math-7B": ModelFacts(
        4096, 152064, QWEN25, False, CHATML, "huggingface.co/Qwen/Qwen2.5-Math-7B: config.json (4k, RoPE 10k)"
    ),
    "Qwen/Qwen2.5-14B": ModelFacts(131072, 152064, QWEN25, False, CHATML, "huggingface.co/Qwen/Qwen2.5-14B"),
    "Qwen/Qwen2.5-32B": ModelFacts(131072, 152064, QWEN25, False, CHATML, "huggingface.co/Qwen/Qwen2.5-32B"),
    "meta-llama/Llama-3.1-8B": ModelFacts(
        131072, 128256, LLAMA3, False, "", "huggingface.co/meta-llama/Llama-3.1-8B: a base model, no chat template"
    ),
    "meta-llama/Llama-3.3-70B-Instruct": ModelFacts(
        131072, 128256, LLAMA3, False, "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "huggingface.co/meta-llama/Llama-3.3-70B-Instruct",
    ),
}  # fmt: skip
