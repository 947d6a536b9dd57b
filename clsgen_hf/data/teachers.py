"""Teachers, the LLMs that write explanations: a local causal LM, an OpenAI-compatible server or vLLM's offline
engine, behind one `Teacher` interface; `make_teacher("kind:target")` picks one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..errors import TeacherError


Conversation = list[dict[str, str]]


class Teacher(Protocol):
    """Anything that answers a batch of chat conversations. `name` identifies it in cache keys; one with a
    `concurrency` (a server) is asked one conversation per call, from that many threads at once."""

    name: str
    generated_tokens: int

    def generate(
        self, conversations: list[Conversation], *, do_sample: bool, temperature: float, max_new_tokens: int
    ) -> list[str]: ...


class TransformersTeacher:
    """A local causal LM run with `transformers`, batched with left padding.

    Args:
        model_name_or_path: a model id, folder or `.gguf` file; `None` is the embedded SmolLM2-135M-Instruct.
        gguf_file: the GGUF file inside `model_name_or_path`, if any.
        model, tokenizer: an already loaded pair (skips loading).
        name: the teacher's name in cache keys; default `transformers:<model_name_or_path>`.
        **model_kwargs: passed to `from_pretrained` (e.g. `device_map="auto"`, `dtype=torch.bfloat16` on a GPU).
    """

    def __init__(
        self,
        model_name_or_path: str | Path | None = None,
        gguf_file: str | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        name: str | None = None,
        **model_kwargs,
    ):
        from transformers import AutoModelForCausalLM

        from ..loading import default_model_path, load_model, load_tokenizer

        if model is None:
            model = load_model(model_name_or_path, gguf_file, model_class=AutoModelForCausalLM, **model_kwargs)
        if tokenizer is None:
            tokenizer = load_tokenizer(model_name_or_path, gguf_file, eos_token_id=model.config.eos_token_id)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.tokenizer.padding_side = "left"
        self.name = name or f"transformers:{model_name_or_path or default_model_path().name}"
        self.generated_tokens = 0

    def generate(
        self, conversations: list[Conversation], *, do_sample: bool = False, temperature: float = 1.0,
        max_new_tokens: int = 256,
    ) -> list[str]:
        import torch

        with torch.inference_mode():
            inputs = self.tokenizer.apply_chat_template(
                conversations, add_generation_prompt=True, padding=True, return_tensors="pt"
            ).to(self.model.device)
            sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
            output = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id, **sampling,
            )
            new = output[:, inputs["input_ids"].shape[1] :]  # (B, T_new)
            is_eos = new == self.tokenizer.eos_token_id  # count each row up to and including its first eos
            lengths = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, new.shape[1])
            self.generated_tokens += int(lengths.sum())
            return [text.strip() for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


class OpenAITeacher:
    """A model behind an OpenAI-compatible `/chat/completions` endpoint (vLLM, TGI, `transformers serve`, llama.cpp,
    Ollama, hosted APIs), asked through the `openai` client.

    The client retries connection errors, timeouts, 408/409/429 and 5xx with backoff (honouring `Retry-After`), never
    another 4xx; a try that takes more than `timeout` seconds in all (connect, headers and body), a reply that
    exceeds `max_reply_bytes` or is not JSON is retried as well (a server trickling its headers or body must not hang
    the run, an endless body must not fill the memory); then a `TeacherError` names the URL. Thread-safe: the
    synthesizer keeps `concurrency` requests in flight.

    Args:
        base_url: e.g. `http://localhost:8000/v1` (a bare `http://host:port` gets `/v1`; a full
            `.../chat/completions` URL loses that suffix, which the client adds).
        model: the served model name; `None` asks the server's `/models` for its first one.
        api_key: sent as a bearer token (local servers need none).
        concurrency: requests in flight at once.
        timeout: seconds each try has in all, from connecting to the reply's last byte.
        max_retries: retries per request after the first try.
        max_reply_bytes: the largest reply body read.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 300.0,
        max_retries: int = 3,
        max_reply_bytes: int = 8 * 2**20,
    ):
        import openai

        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}.")
        url = base_url.rstrip("/").removesuffix("/chat/completions")
        self.base_url = url if urlsplit(url).path else url + "/v1"
        self.url = self.base_url + "/chat/completions"
        self.model, self.concurrency, self.timeout, self.max_retries = model, concurrency, timeout, max_retries
        self.max_reply_bytes = max_reply_bytes
        # Named as configured (not after `/models` is asked), so that cache keys are known before any request.
        self.name = f"openai:{self.base_url}" + (f"#{model}" if model else "")
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "none", timeout=timeout,
                                    max_retries=max_retries, http_client=_deadline_client(timeout))
        self._lock = threading.Lock()
        self.generated_tokens = 0

    def generate(
        self, conversations: list[Conversation], *, do_sample: bool = False, temperature: float = 1.0,
        max_new_tokens: int = 256,
    ) -> list[str]:
        """One request per conversation, in turn (concurrent requests are the synthesizer's, from its threads)."""
        model, temperature = self.served_model(), temperature if do_sample else 0.0
        texts = []
        for messages in conversations:
            reply = self._call(self.client.chat.completions.with_streaming_response.create, self.url, model=model,
                               messages=messages, max_tokens=max_new_tokens, temperature=temperature)
            try:
                texts.append((reply["choices"][0]["message"]["content"] or "").strip())
            except (KeyError, IndexError, TypeError, AttributeError) as error:
                raise TeacherError(
                    f"{self.url} answered without choices[0].message.content: {reply!r:.300}"
                ) from error
            usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
            with self._lock:
                self.generated_tokens += usage.get("completion_tokens") or 0
        return texts

    def served_model(self) -> str:
        """The model name sent with each request: the configured one, else the server's first (asked once)."""
        with self._lock:
            if self.model is None:
                models = self._call(self.client.models.with_streaming_response.list, self.base_url + "/models")
                try:
                    self.model = models["data"][0]["id"]
                except (KeyError, IndexError, TypeError) as error:
                    raise TeacherError(f"{self.base_url}/models lists no model; name the one to ask (`model`).") \
                        from error
            return self.model

    def _call(self, request, url: str, **kwargs) -> dict:
        """The JSON object `request(**kwargs)` (a `with_streaming_response` call) answers, read within `timeout` and
        `max_reply_bytes` (a reply breaking either, or not JSON, is asked again up to `max_retries` times); every
        failure, once the retries are spent, a one-line `TeacherError` naming `url`."""
        import openai

        attempts = self.max_retries + 1
        try:
            for attempt in range(attempts):
                try:
                    with request(**kwargs) as response:
                        return self._read_reply(response)
                except _BadReply as error:
                    if attempt == self.max_retries:
                        raise TeacherError(f"{url} {error} ({attempts} attempts)") from None
                    time.sleep(min(0.5 * 2**attempt, 8.0))
        except openai.APITimeoutError:
            raise TeacherError(f"{url} did not answer within {self.timeout:g} s, {attempts} attempts") from None
        except openai.APIConnectionError as error:
            cause = error.__cause__ or error
            raise TeacherError(f"{url} could not be reached after {attempts} attempts: "
                               f"{type(cause).__name__}: {cause}") from None
        except openai.APIStatusError as error:
            body = error.response.text[:300]
            if error.status_code in (408, 409, 429) or error.status_code >= 500:
                raise TeacherError(f"{url} did not answer after {attempts} attempts; last reply: HTTP "
                                   f"{error.status_code}: {body}") from None
            raise TeacherError(f"{url} refused the request: HTTP {error.status_code}: {body}") from None

    def _read_reply(self, response) -> dict:
        """The body of `response` as a JSON object, read chunk by chunk against the try's deadline and the size cap."""
        import httpx2  # the openai client's HTTP library

        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self.max_reply_bytes:
                    raise _BadReply(f"sent a reply of more than {self.max_reply_bytes} bytes")
        except httpx2.TimeoutException:  # the try's deadline passed mid-body (see `_deadline_client`)
            raise _BadReply(f"did not finish its reply within {self.timeout:g} s") from None
        except httpx2.HTTPError as error:  # the connection dropped mid-body
            raise _BadReply(f"broke off its reply: {type(error).__name__}: {error}") from None
        try:
            reply = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            reply = None
        if not isinstance(reply, dict):
            text = body[:200].decode("utf-8", errors="replace")
            raise _BadReply(f"answered with a body that is not JSON; it begins: {text!r}")
        return reply


class _BadReply(Exception):
    """A reply too slow, too large or not JSON (retried, then a `TeacherError`)."""


_TRY = threading.local()  # `deadline`: when the try this thread is sending must end (a sync client sends in-thread)


def _deadline_client(seconds: float):
    """The `openai` client's default `httpx` client, with a total deadline of `seconds` for each try it sends.

    httpx's timeouts bound each network operation, so a server that sends a byte of its headers or body within each
    read timeout never trips them. Each try (the client's own retries included) starts the deadline of its thread; the
    client's transports (the direct one, and one per proxy from the environment) connect through `_DeadlineBackend`,
    which gives every connect, send and read at most the time left."""
    import openai

    def start_try(request) -> None:
        _TRY.deadline = time.monotonic() + seconds

    client = openai.DefaultHttpxClient(event_hooks={"request": [start_try]})
    for transport in (client._transport, *client._mounts.values()):  # httpx offers no public hook for the backend
        if transport is not None:
            transport._pool._network_backend = _DeadlineBackend(transport._pool._network_backend)
    return client


def _time_left(timeout: float | None, error: str) -> float | None:
    """`timeout` cut to the time left before this thread's deadline; httpcore's `error` (a timeout) once it passed."""
    import httpcore2

    deadline = getattr(_TRY, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise getattr(httpcore2, error)("the try's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineBackend:
    """An httpcore network backend whose TCP connections (the client's transports make no other) obey the deadline of
    the try that uses them; the rest is `backend`'s."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = self._backend.connect_tcp(host, port, _time_left(timeout, "ConnectTimeout"), local_address,
                                           socket_options)
        return _DeadlineStream(stream)


class _DeadlineStream:
    """A network stream whose every read and write gets at most the time left before the try's deadline; the rest is
    `stream`'s."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, "ReadTimeout"))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout, "WriteTimeout"))

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                      _time_left(timeout, "ConnectTimeout")))


class VLLMTeacher:
    """A model run by vLLM's offline engine (`vllm.LLM`), which batches the whole request list itself.

    Args:
        model: a model id or folder vLLM can load.
        **engine_kwargs: passed to `vllm.LLM` (e.g. `tensor_parallel_size`, `max_model_len`).
    """

    def __init__(self, model: str, **engine_kwargs):
        try:
            import vllm
        except ImportError as error:
            raise TeacherError(
                "The vLLM teacher needs the `vllm` package (GPU machines): pip install vllm. "
                "Or serve the model and use `openai:<url>`, or use `transformers:<model>`."
            ) from error
        self.llm = vllm.LLM(model=model, **engine_kwargs)
        self.name = f"vllm:{model}"
        self.generated_tokens = 0

    def generate(
        self, conversations: list[Conversation], *, do_sample: bool = False, temperature: float = 1.0,
        max_new_tokens: int = 256,
    ) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=temperature if do_sample else 0.0, max_tokens=max_new_tokens)
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        self.generated_tokens += sum(len(out.outputs[0].token_ids) for out in outputs)
        return [out.outputs[0].text.strip() for out in outputs]


def make_teacher(spec: str | None = None, **kwargs) -> Teacher:
    """A teacher from a spec: `"transformers[:<id, folder or .gguf>]"` (default: the embedded SmolLM2-135M-Instruct),
    `"self"` (the loaded `model=` and `tokenizer=`, e.g. the model about to be trained), `"openai:<url>"` (`model=`,
    `api_key=` ... as kwargs) or `"vllm:<model>"`."""
    kind, _, target = (spec or "transformers").partition(":")
    if kind == "self" and not target:
        return TransformersTeacher(name=f"self:{kwargs['model'].config._name_or_path}", **kwargs)
    if kind == "transformers":
        return TransformersTeacher(target or None, **kwargs)
    if kind == "openai" and target:
        return OpenAITeacher(target, **kwargs)
    if kind == "vllm" and target:
        return VLLMTeacher(target, **kwargs)
    raise ValueError(f"Unknown teacher {spec!r}; use 'self', 'transformers[:<model>]', 'openai:<url>' or "
                     "'vllm:<model>'.")


__all__ = ["Teacher", "TeacherError", "TransformersTeacher", "OpenAITeacher", "VLLMTeacher", "make_teacher"]
