"""The opd stage's served teacher: one model behind one or several stock `vllm serve` replicas, asked for top-k
*prompt* logprobs of prompt + completion (a prefill, no decoding), with failover between the replicas.

    teacher = ServedTeacher(spec)                      # spec.server.base_url: one URL, or a list of replicas
    teacher.check_ready(student_vocab=151936)          # pre-flight: every replica answers, scores every id
    scores = teacher.score([(prompt_ids, completion_ids), ...], k=20)

Replicas are balanced here, in the client, not by a router in front: vLLM skips its prefix cache for requests
with `prompt_logprobs`, so a cache-aware router (vllm-router) would buy nothing, while the client knows which
request failed and re-sends it at once to a live replica. A request goes to the live replica with the fewest in
flight; a replica that fails (connection error, timeout, 429, 5xx) is benched for `BENCH_SECONDS` and the
request moves to the next replica without waiting; only when every replica has failed it does one of
`server.max_retries` retries, after an exponential backoff. A 4xx other than 408/429 is never retried: the
request itself is wrong. A router (or any proxy) in front still works as one `base_url` if it forwards
`/tokenize`, which the pre-flight needs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from pipeline.train.opd.config import TeacherError, TeacherSpec
from pipeline.train.opd.scores import Sequence, TokenScores, parse_prompt_logprobs

log = logging.getLogger("distill.opd")
BENCH_SECONDS = 30.0
"""How long a failed replica gets no new requests before it is tried again."""
RETRYABLE = {408, 429}
"""Status codes below 500 that are worth a retry (a request timeout, a rate limit)."""


class Replicas:
    """The base URLs of one served model and what the client knows of each: requests in flight, benched until."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self.busy = dict.fromkeys(urls, 0)
        self.benched_until = dict.fromkeys(urls, 0.0)

    def order(self) -> list[str]:
        """The replicas to try, best first: live ones by fewest in flight, then benched ones (soonest back first)."""
        now = time.monotonic()
        live = sorted((u for u in self.urls if self.benched_until[u] <= now), key=self.busy.__getitem__)
        benched = sorted(
            (u for u in self.urls if self.benched_until[u] > now), key=self.benched_until.__getitem__
        )
        return live + benched

    def bench(self, url: str, reason: str) -> None:
        if self.benched_until[url] <= time.monotonic():
            log.warning("teacher replica %s failed (%s): its requests go to the others", url, reason)
        self.benched_until[url] = time.monotonic() + BENCH_SECONDS


def status_of(error: Exception) -> int | None:
    """The HTTP status of an openai client error, None for a connection error or a timeout."""
    return getattr(error, "status_code", None)


def retryable(error: Exception) -> bool:
    import openai

    if isinstance(error, openai.APIConnectionError):  # refused, reset, timed out: the replica's fault
        return True
    status = status_of(error)
    return status is not None and (status >= 500 or status in RETRYABLE)


class ServedTeacher:
    """A teacher behind stock `vllm serve` replicas: `/v1/completions` with `prompt_logprobs`, and `/tokenize`."""

    def __init__(self, spec: TeacherSpec, key: str = "*") -> None:
        self.server, self.key = spec.server, key
        self.name = spec.describe()
        self.served = spec.server.model or "teacher"
        self.replicas = Replicas(spec.server.urls())
        self.field = f"teachers.{key}.server.base_url"

    # --- scoring -------------------------------------------------------------------------------------------

    def score(self, sequences: list[Sequence], k: int) -> list[TokenScores]:
        return asyncio.run(self._score_all(sequences, k))

    async def _score_all(self, sequences: list[Sequence], k: int) -> list[TokenScores]:
        clients = {url: self._client(url) for url in self.replicas.urls}
        gate = asyncio.Semaphore(self.server.concurrency * len(clients))  # `concurrency` is per replica

        async def one(seq: Sequence) -> TokenScores:
            async with gate:
                return await self._score_one(clients, seq, k)

        try:
            return list(await asyncio.gather(*(one(s) for s in sequences)))
        finally:
            for client in clients.values():
                await client.close()

    def _client(self, url: str) -> Any:
        from openai import AsyncOpenAI

        key = os.environ.get(self.server.api_key_env) or "EMPTY"
        return AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=self.server.timeout)

    async def _score_one(self, clients: dict[str, Any], seq: Sequence, k: int) -> TokenScores:
        """Every replica in turn (best first) until one answers; a round where all failed costs one retry."""
        from openai import APIError

        prompt, completion = seq
        last: tuple[str, Exception] | None = None
        for attempt in range(self.server.max_retries + 1):
            if attempt:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))  # the openai client's own backoff
            for url in self.replicas.order():
                try:
                    entries = await self._ask(clients[url], url, prompt + completion, k)
                except APIError as e:  # the server's or the network's answer; anything else is our bug
                    if not retryable(e):
                        raise self._refused(url, e) from None
                    self.replicas.bench(url, f"{type(e).__name__}: {e}")
                    last = (url, e)
                    continue
                return parse_prompt_logprobs(entries[len(prompt) :], completion, k)
        url, e = last
        raise TeacherError(
            f"teacher {self.served!r} at {url} failed after {self.server.max_retries} retries: "
            f"{type(e).__name__}: {e}"
        ) from None

    async def _ask(self, client: Any, url: str, ids: list[int], k: int) -> list[dict[str, Any]]:
        self.replicas.busy[url] += 1
        try:
            response = await client.completions.create(
                model=self.served,
                prompt=ids,
                max_tokens=1,
                temperature=0.0,
                extra_body={"prompt_logprobs": k},
            )
        finally:
            self.replicas.busy[url] -= 1
        choice = response.choices[0]
        entries = (choice.model_extra or {}).get("prompt_logprobs") or getattr(
            choice, "prompt_logprobs", None
        )
        if not entries or len(entries) != len(ids):
            raise TeacherError(
                f"teacher {self.served!r} at {url} returned no prompt logprobs for a {len(ids)}-token sequence: "
                "is it a vLLM server (it needs prompt_logprobs)?"
            )
        return entries

    def _refused(self, url: str, error: Exception) -> TeacherError:
        body = getattr(error, "message", None) or str(error)
        return TeacherError(
            f"teacher {self.served!r} at {url} refused a scoring request: {status_of(error)} {body} "
            "(a 4xx is not retried: the request itself is wrong)"
        )

    # --- pre-flight ----------------------------------------------------------------------------------------

    def each_replica(self) -> list[ServedTeacher]:
        """One teacher per replica, so the pre-flight checks every one of them."""
        from dataclasses import replace

        return [
            ServedTeacher(TeacherSpec(server=replace(self.server, base_url=u)), self.key)
            for u in self.replicas.urls
        ]

    def check_ready(self, student_vocab: int) -> None:
        """Every replica answers, serves the model, and scores the student's highest token id; else one line
        naming the replica and what to do."""
        for replica in self.each_replica():
            replica._check_serves()
            replica._check_scores_id(student_vocab - 1, student_vocab)

    def _check_serves(self) -> None:
        url = self.replicas.urls[0]
        try:
            served = [m["id"] for m in self._http("GET", url.rstrip("/") + "/models")["data"]]
        except (TeacherError, KeyError, TypeError) as e:  # down, or not an OpenAI-compatible server
            raise TeacherError(
                f"teacher replica {url} does not answer ({e})",
                field=self.field,
                hint="start it, or remove it from the list; a CPU install serves with `python -m "
                "vllm.entrypoints.openai.api_server --model M --served-model-name NAME`",
            ) from None
        if self.served not in served:
            raise TeacherError(
                f"teacher replica {url} serves {served}, not {self.served!r}",
                field=f"teachers.{self.key}.server.model",
                hint="set it to the served model's name",
            )

    def _check_scores_id(self, top: int, vocab: int) -> None:
        """A one-token prefill of the student's highest id: a teacher with a smaller vocabulary refuses it now,
        not at the first rollout that samples such an id."""
        from openai import APIError

        url = self.replicas.urls[0]

        async def ask() -> None:
            client = self._client(url)
            try:
                await client.completions.create(
                    model=self.served,
                    prompt=[top],
                    max_tokens=1,
                    temperature=0.0,
                    extra_body={"prompt_logprobs": 1},
                )
            finally:
                await client.close()

        try:
            asyncio.run(ask())
        except APIError as e:
            if retryable(e):  # the replica is unwell, not the vocabulary
                raise TeacherError(
                    f"teacher replica {url} failed a one-token scoring request: {type(e).__name__}: {e}",
                    field=self.field,
                    hint="check that it is healthy (its log), or remove it from the list",
                ) from None
            raise TeacherError(
                f"teacher {self.name} cannot score token id {top}, the student's highest of {vocab} "
                f"({status_of(e)} {getattr(e, 'message', None) or e})",
                field=f"teachers.{self.key}",
                hint="serve a teacher whose vocabulary holds the student's (the same tokenizer; padding is fine)",
            ) from None

    def _http(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """One pre-flight request with the key, no retries; any failure is a TeacherError naming the URL."""
        import httpx

        key = os.environ.get(self.server.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            r = httpx.request(method, url, json=body, headers=headers, timeout=60)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise TeacherError(f"{method} {url}: {type(e).__name__}: {e}") from None

    def _tokenize(self, body: dict[str, Any]) -> list[int]:
        root = self.replicas.urls[0].rstrip("/").removesuffix("/v1")
        try:
            return list(self._http("POST", f"{root}/tokenize", {"model": self.served, **body})["tokens"])
        except (TeacherError, KeyError, TypeError) as e:
            raise TeacherError(
                f"teacher {self.served!r} at {root}/tokenize: {e}",
                field=self.field,
                hint="the pre-flight asks the teacher how it tokenises: point base_url at stock `vllm serve` "
                "replicas, or at a router that forwards /tokenize to them",
            ) from None

    def prompt_ids(self, messages: list[dict[str, str]], think_prefix: bool) -> list[int]:
        from pipeline.prompts import THINK_PREFIX, with_think_prefix

        ids = self._tokenize(
            {"messages": messages, "add_generation_prompt": True, "add_special_tokens": False}
        )
        return with_think_prefix(ids, self.encode(THINK_PREFIX)) if think_prefix else ids

    def encode(self, text: str) -> list[int]:
        return self._tokenize({"prompt": text, "add_special_tokens": False})
