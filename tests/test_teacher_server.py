"""Real engines at both ends, on a real `transformers serve` (FastAPI + uvicorn, 127.0.0.1, a free port): the
`openai:` teacher asks the embedded SmolLM2 served from a saved folder, and the serving export's generator folder
answers chat requests."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from clsgen_hf.cli import main as cli_main
from clsgen_hf.data import CLINIFACT_BINARY_TEMPLATE, AnswerCache
from clsgen_hf.loading import load_model, load_tokenizer
from clsgen_hf.verdicts import VerdictFormat


CLINIFACT_DIR = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "clinifact")
SERVE_STARTUP_S = 180
# SmolLM2-135M answers 'The answer is "No".', never "Answer: No": a verdict line it writes, and an instruction asking
# for reasons only, so that its answers can be kept (it still almost always says No: the rows below are class 0).
VERDICT = VerdictFormat({0: "No", 1: "Yes"}, prefix="The answer is")
INSTRUCTION = 'Explain in two sentences why the answer to the question below is "{answer}".\\n\\n{text}'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def transformers_serve(folder: Path, log: Path):
    """`transformers serve FOLDER` on 127.0.0.1 (a free port), its access log in `log`; yields the `/v1` URL and
    stops the server by its PID."""
    port = _free_port()
    command = [str(Path(sys.executable).with_name("transformers")), "serve", str(folder), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--log-level", "info"]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVE_STARTUP_S
        while True:
            assert server.poll() is None, f"transformers serve exited with {server.returncode}:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"transformers serve did not start:\n{log.read_text()[-2000:]}"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()


def _served_requests(log: Path) -> int:
    return log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')


def _json_keys(path: Path):
    """The keys of a JSON Lines cache, skipping a line cut short by the kill."""
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)["key"]
        except json.JSONDecodeError:
            pass


def _embedded_folder(folder: Path) -> Path:
    """The embedded SmolLM2 as a plain model folder (`transformers serve` refuses a GGUF path: no architectures)."""
    model = load_model(None, model_class=AutoModelForCausalLM)
    load_tokenizer(None, eos_token_id=model.config.eos_token_id).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_synthesize_through_transformers_serve_resumes_without_asking_twice(tmp_path):
    """`clsgen-hf synthesize --teacher openai:<transformers serve>` on CliniFact rows: the served answers are
    verdict-filtered and cached; killed once answers are cached, the rerun asks the server only for the others."""
    template = tmp_path / "template.json"
    template.write_text(json.dumps(replace(CLINIFACT_BINARY_TEMPLATE, verdict_format=VERDICT).to_dict()))
    output, cache, log = tmp_path / "out.jsonl", tmp_path / "out.cache.jsonl", tmp_path / "serve.log"
    with transformers_serve(_embedded_folder(tmp_path / "smollm2"), log) as url:
        argv = [sys.executable, "-m", "clsgen_hf.cli", "synthesize", "--input", f"clinifact:{CLINIFACT_DIR}",
                "--clinifact_split", "validation", "--max_rows", "2", "--prompt_template", str(template),
                "--teacher", f"openai:{url}", "--teacher_concurrency", "2", "--teacher_retries", "0",
                "--teacher_max_new_tokens", "32", "--teacher_instruction", INSTRUCTION, "--min_words", "5",
                "--output", str(output), "--no_progress"]
        first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while first.poll() is None and len(AnswerCache(cache)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        cached = len(AnswerCache(cache))
        assert cached >= 1 and not output.exists(), "the first run was not interrupted mid-way"

        second = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr[-3000:]
        keys = list(_json_keys(cache))
        assert len(keys) == len(set(keys)), "an answer was asked for twice"
        report = json.loads(output.with_suffix(".meta.json").read_text())["report"]
        assert report["reused"] == cached and report["generated"] == len(keys) - cached
        deadline = time.monotonic() + 60  # requests of the killed run still in flight finish on the server
        while _served_requests(log) < len(keys) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(keys) <= _served_requests(log) <= len(keys) + 2  # + at most the two in flight at the kill

    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == sum(report["first_try"].values()) >= 1
    for row in rows:
        explanation = row["completion"][0]["content"]
        assert VERDICT.read(explanation) == row["label"] and explanation.endswith(VERDICT.line(row["label"]))
        assert len(explanation.split()) >= 5 + len(VERDICT.line(row["label"]).split())


@pytest.mark.slow
def test_transformers_serve_serves_the_exported_generator(tmp_path, smollm2):
    """`clsgen-hf export --format serving` of the embedded model: `transformers serve` runs its generator folder, and
    a greedy chat request answers what the folder, loaded locally, generates."""
    model, tokenizer = smollm2
    model.save_pretrained(tmp_path / "src")
    tokenizer.save_pretrained(tmp_path / "src")
    assert cli_main(["export", str(tmp_path / "src"), str(tmp_path / "dest"), "--format", "serving",
                     "--no-validate"]) == 0
    generator_dir = tmp_path / "dest" / "generator"
    messages = [{"role": "user", "content": "Is aspirin an anticoagulant? Answer in one sentence."}]
    generator = AutoModelForCausalLM.from_pretrained(generator_dir)
    generator_tokenizer = AutoTokenizer.from_pretrained(generator_dir)
    inputs = generator_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)
    with torch.no_grad():
        ids = generator.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    expected = generator_tokenizer.decode(ids, skip_special_tokens=True).strip()
    del generator

    import openai

    with transformers_serve(generator_dir, tmp_path / "serve.log") as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=120)
        served = client.models.list().data[0].id
        reply = client.chat.completions.create(model=served, messages=messages, max_tokens=8, temperature=0)
    assert expected and reply.choices[0].message.content.strip() == expected
    assert reply.usage.completion_tokens == len(ids)
