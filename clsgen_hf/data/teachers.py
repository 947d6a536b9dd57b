"""Teachers: the LLMs that write explanations, behind one `Teacher` interface.

A local causal LM (`TransformersTeacher`), an OpenAI-compatible server (`OpenAITeacher`: vLLM, TGI, llama.cpp,
Ollama) and vLLM's offline engine (`VLLMTeacher`) all take a batch of chat conversations and return one answer
each, so the synthesizer does not care where answers come from. `make_teacher("kind:target")` picks one by name.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import requests
import torch

from ..loading import default_model_path, load_model, load_tokenizer


logger = logging.getLogger(__name__)

Conversation = list[dict[str, str]]


class TeacherError(RuntimeError):
    """A teacher could not answer (endpoint down, bad reply, missing backend)."""


@runtime_checkable
class Teacher(Protocol):
    """Anything that answers a batch of chat conversations.

    `name` identifies the teacher in cache keys and metadata: two teachers with one name are assumed to answer
    alike. `generated_tokens` counts the tokens generated so far (for throughput reports).
    """

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

        if model is None:
            model = load_model(model_name_or_path, gguf_file, model_class=AutoModelForCausalLM, **model_kwargs)
        if tokenizer is None:
            tokenizer = load_tokenizer(model_name_or_path, gguf_file, eos_token_id=model.config.eos_token_id)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.tokenizer.padding_side = "left"
        self.name = name or f"transformers:{model_name_or_path or default_model_path().name}"
        self.generated_tokens = 0

    @torch.inference_mode()
    def generate(
        self, conversations: list[Conversation], *, do_sample: bool = False, temperature: float = 1.0,
        max_new_tokens: int = 256,
    ) -> list[str]:
        inputs = self.tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, padding=True, return_tensors="pt"
        ).to(self.model.device)
        sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
        output = self.model.generate(
            **inputs, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id, **sampling,
        )
        new = output[:, inputs["input_ids"].shape[1] :]  # (B, T_new)
        self.generated_tokens += int(_until_eos(new, self.tokenizer.eos_token_id).sum())
        return [text.strip() for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


def _until_eos(tokens: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Per row, the number of generated tokens up to and including the first eos."""
    is_eos = tokens == eos_token_id
    return torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, tokens.shape[1])


class OpenAITeacher:
    """A model behind an OpenAI-compatible `/chat/completions` endpoint, queried from a thread pool.

    Connection errors, timeouts, 429 and 5xx replies are retried with exponential backoff; after `max_retries`
    retries a `TeacherError` names the URL.

    Args:
        base_url: e.g. `http://localhost:8000/v1` (a bare `http://host:port` gets `/v1`; a full
            `.../chat/completions` URL is used as is).
        model: the served model name; `None` asks the server's `/models` for its first one.
        api_key: sent as a bearer token when given.
        concurrency: requests in flight at once.
        timeout: seconds per request.
        max_retries: retries per request after the first try.
        backoff: seconds before the first retry, doubled after each.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
    ):
        url = base_url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url = (url if urlsplit(url).path else url + "/v1") + "/chat/completions"
        self.url, self.models_url = url, url.removesuffix("/chat/completions") + "/models"
        self.model, self.concurrency, self.timeout = model, concurrency, timeout
        # Named as configured (not after `/models` is asked), so that cache keys are known before any request.
        self.name = f"openai:{self.url.removesuffix('/chat/completions')}" + (f"#{model}" if model else "")
        self.max_retries, self.backoff = max_retries, backoff
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.generated_tokens = 0

    def generate(
        self, conversations: list[Conversation], *, do_sample: bool = False, temperature: float = 1.0,
        max_new_tokens: int = 256,
    ) -> list[str]:
        if self.model is None:
            self.model = self._request("GET", self.models_url)["data"][0]["id"]
        payload = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature if do_sample else 0.0}
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            replies = list(pool.map(lambda messages: self._request("POST", self.url, {**payload, "messages": messages}),
                                    conversations))
        self.generated_tokens += sum((reply.get("usage") or {}).get("completion_tokens", 0) for reply in replies)
        try:
            return [(reply["choices"][0]["message"]["content"] or "").strip() for reply in replies]
        except (KeyError, IndexError, TypeError) as error:
            raise TeacherError(f"{self.url} answered without choices[0].message.content: {replies[0]!r}") from error

    def _request(self, method: str, url: str, payload: dict | None = None) -> dict:
        """One JSON request, retried with backoff on errors worth retrying."""
        last: str = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = requests.request(method, url, json=payload, headers=self.headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise TeacherError(f"{url} refused the request: HTTP {response.status_code}: {response.text[:500]}")
            try:
                return response.json()
            except requests.JSONDecodeError as error:
                raise TeacherError(f"{url} answered HTTP {response.status_code} with a body that is not JSON ({error}); "
                                   f"it begins: {response.text[:200]!r}") from None
        raise TeacherError(f"{url} did not answer after {self.max_retries + 1} attempts; last error: {last}")


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
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, **engine_kwargs)
        self.name = f"vllm:{model}"
        self.generated_tokens = 0

    def generate(
        self, conversations: list[Conversation], *, do_sample: bool = False, temperature: float = 1.0,
        max_new_tokens: int = 256,
    ) -> list[str]:
        params = self._vllm.SamplingParams(temperature=temperature if do_sample else 0.0, max_tokens=max_new_tokens)
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        self.generated_tokens += sum(len(out.outputs[0].token_ids) for out in outputs)
        return [out.outputs[0].text.strip() for out in outputs]


def make_teacher(spec: str | None = None, **kwargs) -> Teacher:
    """A teacher from a spec string.

    - `"transformers"` or `None`: the embedded SmolLM2-135M-Instruct; `"transformers:<id, folder or .gguf>"`.
    - `"openai:<url>"`, e.g. `"openai:http://localhost:8000/v1"` (pass `model=`, `api_key=` ... as kwargs).
    - `"vllm:<model>"`.
    """
    kind, _, target = (spec or "transformers").partition(":")
    if kind == "transformers":
        return TransformersTeacher(target or None, **kwargs)
    if kind == "openai" and target:
        return OpenAITeacher(target, **kwargs)
    if kind == "vllm" and target:
        return VLLMTeacher(target, **kwargs)
    raise ValueError(f"Unknown teacher {spec!r}; use 'transformers[:<model>]', 'openai:<url>' or 'vllm:<model>'.")


__all__ = ["Teacher", "TeacherError", "TransformersTeacher", "OpenAITeacher", "VLLMTeacher", "make_teacher"]
