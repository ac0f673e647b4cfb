"""The openai engine: any OpenAI-compatible chat server (`vllm serve`, SGLang, a hosted API).

Async with bounded concurrency (`server.concurrency` requests in flight); retries with exponential backoff on
429, 5xx, connection errors and timeouts are the openai client's own (`max_retries`, honouring Retry-After).
The API key is read from the environment variable `server.api_key_env` and never logged or written.
Servers that return the reasoning separately (`reasoning_content`, or `reasoning` in newer vLLM) get it put
back as `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`, so the filter sees one trace either way.
A forced `<think>\\n` prefix is sent as a final assistant message to continue (vLLM's and SGLang's
`continue_final_message`).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.generate.config import GenerateConfig, ServerConfig
from pipeline.generate.engine_api import Completion, Request

_DONE = object()


class OpenAIEngine:
    max_model_len = None

    def __init__(self, cfg: GenerateConfig) -> None:
        self.server = cfg.server
        self.served = cfg.server.model or cfg.model

    def client(self) -> Any:
        return async_client(self.server)

    def run(self, cfg: GenerateConfig, requests: Iterable[Request]) -> Iterator[Completion]:
        """Drive an event loop in a thread; completions come back through a queue as they finish."""
        results: queue.Queue = queue.Queue(maxsize=4 * self.server.concurrency)
        thread = threading.Thread(
            target=lambda: asyncio.run(self._run(cfg, iter(requests), results)), daemon=True
        )
        thread.start()
        while (item := results.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()

    async def _run(self, cfg: GenerateConfig, pending: Iterator[Request], results: queue.Queue) -> None:
        client = self.client()

        async def worker() -> None:
            while True:
                request = next(pending, None)  # no await in between: workers take requests one at a time
                if request is None:
                    return
                completion = await self.complete(cfg, client, request)
                await asyncio.to_thread(results.put, completion)

        try:
            await asyncio.gather(*(worker() for _ in range(self.server.concurrency)))
        except BaseException as e:  # noqa: BLE001 (handed to the consuming thread, which raises it)
            await asyncio.to_thread(results.put, e)
        finally:
            await client.close()
            await asyncio.to_thread(results.put, _DONE)

    async def complete(self, cfg: GenerateConfig, client: Any, request: Request) -> Completion:
        s = cfg.sampling
        messages = list(request.messages)
        extra: dict[str, Any] = {}
        if s.top_k:
            extra["top_k"] = s.top_k
        if s.min_p:
            extra["min_p"] = s.min_p
        if request.prefix:
            messages.append({"role": "assistant", "content": request.prefix})
            extra.update(continue_final_message=True, add_generation_prompt=False)
        import openai

        try:
            response = await client.chat.completions.create(
                model=self.served,
                messages=messages,
                n=1,
                temperature=s.temperature,
                top_p=s.top_p,
                max_tokens=request.max_tokens,
                seed=request.seed,
                stop=list(s.stop) or None,
                extra_body=extra or None,
            )
        except openai.APIError as e:  # refused, unreachable or timed out after the client's retries
            raise RuntimeError(f"sample {request.sample_id}: the server refused the request: {e}") from e
        choice = response.choices[0]
        message = choice.message
        extra_fields = message.model_extra or {}
        reasoning = extra_fields.get("reasoning_content") or extra_fields.get("reasoning")
        content = message.content or ""
        text = join_reasoning(reasoning, content) if reasoning else request.prefix + content
        usage = response.usage
        return Completion(
            request,
            text,
            "length" if choice.finish_reason == "length" else "stop",
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )

    def close(self) -> None:
        pass


def async_client(server: ServerConfig) -> Any:
    """An async OpenAI client for `server`: the key from its environment variable, the client's own retries with
    exponential backoff (429, 5xx, connection errors, timeouts). The opd stage's served teacher uses it too."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        base_url=server.base_url,
        api_key=os.environ.get(server.api_key_env) or "EMPTY",
        max_retries=server.max_retries,
        timeout=server.timeout,
    )


def join_reasoning(reasoning: str, content: str) -> str:
    """`<think>\n{reasoning}\n</think>\n\n{content}`: exact for servers that keep the text between the tags
    as generated (vLLM's parsers), R1's canonical layout for those that strip it (hosted APIs)."""
    head = "" if reasoning.startswith("\n") else "\n"
    tail = "" if reasoning.endswith("\n") else "\n"
    sep = "" if content.startswith("\n") or not content else "\n\n"
    return f"<think>{head}{reasoning}{tail}</think>{sep}{content}"
