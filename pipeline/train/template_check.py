"""Pre-flight checks of the chat template and EOS, on one example rendered exactly as TRL will train on it.

open-r1's users lost runs to students that never stop (a template whose assistant turn does not end with the
token generation stops on) and to templates that silently drop the reasoning (R1-Distill's template strips
everything before `</think>` from assistant turns). Before training, one example goes through the trainer's own
dataset preparation (unpacked) and we refuse to start unless:
  1. the `<think>` content of the completion survives into the supervised tokens;
  2. the supervised span ends (ignoring trailing whitespace tokens) with a token the student stops on;
  3. the prompt is masked: no supervised token before the completion, and the prompt text is not supervised.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import UserError


class TemplateError(UserError, RuntimeError):
    """The chat template or EOS setup would train a broken student."""


def pick_example(dataset: Any, limit: int = 64) -> dict[str, Any]:
    """The shortest of the first examples, so truncation to max_length does not hide the end of the span."""
    rows = dataset.select(range(min(limit, len(dataset))))
    return min(rows, key=lambda r: len(str(r.get("completion", r.get("messages")))))


def stop_token_ids(tokenizer: Any, model: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return {i for i in ids if i is not None}


def split_example(example: dict[str, Any]) -> tuple[Any, str]:
    """(prompt messages or text, completion text) of a prompt/completion or messages example."""
    if "completion" in example:
        completion = example["completion"]
        return example["prompt"], completion[-1]["content"] if isinstance(completion, list) else completion
    messages = example["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def prompt_length(tok: Any, prompt: Any, chat_template: str | None) -> int:
    if isinstance(prompt, list):
        return len(
            tok.apply_chat_template(
                prompt,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                chat_template=chat_template,
            )["input_ids"]
        )
    return len(tok(prompt)["input_ids"])


def check_template(trainer: Any, example: dict[str, Any]) -> dict[str, Any]:
    """Raise TemplateError unless the rendered example passes the three checks; return what was checked."""
    tok = trainer.processing_class
    tok = getattr(tok, "tokenizer", tok)
    labels, supervised = _supervised_tokens(trainer, example)
    prompt, completion = split_example(example)
    _check_reasoning_kept(completion, tok.decode(supervised, skip_special_tokens=False))
    last = _check_ends_on_stop(tok, trainer.model, supervised)
    first = _check_prompt_masked(tok, prompt, labels, getattr(trainer, "chat_template", None))
    return {
        "supervised_tokens": len(supervised),
        "prompt_tokens": first,
        "stop_token": tok.convert_ids_to_tokens(last),
    }


def _supervised_tokens(trainer: Any, example: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The example's labels as the trainer prepares it (unpacked), and its supervised ids; refused if none."""
    from datasets import Dataset

    prepared = trainer._prepare_dataset(  # noqa: SLF001 (the trainer's own preparation, so we check its output)
        Dataset.from_list([example]),
        trainer.processing_class,
        trainer.args,
        packing=False,
        formatting_func=None,
        dataset_name="preflight",
    )[0]
    ids, labels = prepared["input_ids"], prepared["labels"]
    supervised = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    if not supervised:
        raise TemplateError(
            "no token of the example is supervised: the completion is masked out (check "
            "completion_only_loss / assistant_only_loss and the template's generation markers)"
        )
    return labels, supervised


def _check_reasoning_kept(completion: str, rendered: str) -> None:
    """Check 1: the start of the completion's <think> content is in the supervised text."""
    if "</think>" in completion:
        reasoning = completion.split("</think>")[0].split("<think>")[-1].strip()
        if reasoning and reasoning[:200] not in rendered:
            raise TemplateError(
                "the chat template drops the <think> content of the completion: the student would be trained "
                f"without its reasoning. Supervised text: {rendered[:300]!r}. Name a training template that keeps "
                "it (trainer.chat_template_path)"
            )


def _check_ends_on_stop(tok: Any, model: Any, supervised: list[int]) -> int:
    """Check 2: the last supervised token that is not whitespace is one the student stops on; that token."""
    stops = stop_token_ids(tok, model)
    last = next((t for t in reversed(supervised) if tok.decode([t]).strip() or t in stops), supervised[-1])
    if last not in stops:
        names = ", ".join(repr(tok.convert_ids_to_tokens(s)) for s in sorted(stops))
        raise TemplateError(
            f"the supervised span ends with {tok.convert_ids_to_tokens(last)!r}, not a token the student stops on "
            f"({names}): the trained student would never stop. Use a template that closes the assistant turn with "
            "EOS, or set trainer.eos_token"
        )
    return last


def _check_prompt_masked(tok: Any, prompt: Any, labels: list[int], chat_template: str | None) -> int:
    """Check 3: no supervision inside the prompt; the position of the first supervised token."""
    first = next(i for i, label in enumerate(labels) if label != -100)
    n_prompt = prompt_length(tok, prompt, chat_template)
    if (
        first < n_prompt - 1
    ):  # TRL may start the completion one token early where tokens merge at the boundary
        raise TemplateError(
            f"the prompt is not masked: supervision starts at token {first} of a {n_prompt}-token prompt"
        )
    return first
