"""Explanation synthesis: verdict filtering, retries, the answer cache, teachers and the `clsgen-hf synthesize`
command.

A scripted teacher and a small HTTP server stand in where answers must be chosen on demand (the gold verdict, none, a
wrong one) or the endpoint must fail (HTTP 5xx/429/400, a body that is not JSON, a hang, a body trickled byte by byte
or without end); a real `transformers serve` endpoint is exercised in `test_teacher_server.py`.
"""

import importlib.util
import json
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from datasets import Dataset

from clsgen_hf.cli import main as cli_main
from clsgen_hf.data import (
    CLINIFACT_BINARY_TEMPLATE,
    AnswerCache,
    OpenAITeacher,
    SynthesisReport,
    TeacherError,
    TransformersTeacher,
    accept_answer,
    follow_up_messages,
    load_clinifact,
    make_teacher,
    synthesize_explanations,
    teacher_messages,
)
from clsgen_hf.verdicts import VerdictFormat


CLINIFACT_DIR = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "clinifact")
FMT = VerdictFormat()
BECAUSE = (
    "Because the abstract reports a significant benefit of the drug over placebo on the primary outcome, "
    "which is what the claim states."
)
GOOD_REASON = f"Explanation: {BECAUSE}"


class ChatServer(ThreadingHTTPServer):
    """An OpenAI-compatible endpoint on 127.0.0.1 answering as `scripted_answer`, with faults on demand.

    `fail_after` makes it answer `fail_status` (503) after that many answers, or, with `fault` set, a faulty body:
    "trickle" (one byte every 0.2 s), "endless" (JSON that never ends) or "bad_json" (a JSON content type, a broken
    body), each for at most `FAULT_S` seconds; `broken` makes it answer every question with an apology (no verdict),
    `invalid_json` with an HTML page; `delay` holds every reply. Every answered user message is logged, and counted per
    API key (per client run).
    """

    FAULT_S = 30.0

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answered: list[str] = []
        self.answered_per_key: Counter = Counter()  # per API key, i.e. per client run
        self.fail_after, self.fail_status, self.failures, self.delay = None, 503, 0, 0.0
        self.fault: str | None = None
        self.requests = 0
        self.broken = self.invalid_json = False
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address):
        pass  # a client killed mid-request (the resume test) is expected

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reply(self, payload: dict) -> str:
        if self.broken:
            return "Sorry, the service is overloaded; please try again later."
        return scripted_answer(payload["messages"], payload["temperature"])


def scripted_answer(messages: list[dict], temperature: float) -> str:
    """How the scripted teachers answer, by a marker in the row text: none -> the gold verdict; "[retry]" -> the wrong
    verdict when greedy (temperature 0), the gold one when sampling; "[late]" -> no verdict, the gold one when asked
    for it; "[never]" -> no verdict even when asked."""
    first, last = messages[1]["content"], messages[-1]["content"]
    gold = re.search(r'answer is "(\w+)"', first).group(1)
    if last.startswith("What is your final answer"):  # the verdict follow-up
        return "I do not know." if "[never]" in first else f"Answer: {gold}"
    if "[never]" in first or "[late]" in first:
        return "The abstract reports the outcome that the trial measured in all of its patients, at every visit, " \
            "for two years."
    if "[retry]" in first and temperature == 0:
        return f"Explanation: the abstract reports no such result.\nAnswer: {'No' if gold == 'Yes' else 'Yes'}"
    return f"{GOOD_REASON}\nAnswer: {gold}\nHope this helps!"


class ScriptedTeacher:
    """A `Teacher` answering as `scripted_answer`, in this process; with `concurrency` above 1 the synthesizer calls it
    from that many threads, as it does a server teacher."""

    def __init__(self, concurrency: int = 1):
        self.name, self.generated_tokens, self.concurrency = "scripted", 0, concurrency
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def generate(self, conversations, *, do_sample=False, temperature=1.0, max_new_tokens=256):
        time.sleep(0.01 * (len(self.asked) % 3))  # answers come back out of order
        texts = [scripted_answer(messages, temperature if do_sample else 0.0) for messages in conversations]
        with self.lock:
            self.asked += [messages[-1]["content"] for messages in conversations]
            self.generated_tokens += sum(len(text.split()) for text in texts)
        return texts


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status >= 400:
            self.send_header("retry-after-ms", "10")  # the client honours it: quick retries
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_faulty(self, fault: str):
        """A 200 reply whose body trickles, never ends or is broken JSON; the client hanging up ends it."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if fault == "bad_json":
            body = b'{"choices": [{"message": oops'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return self.wfile.write(body)
        if fault == "trickle":
            self.send_header("Content-Length", "1000000")
        self.end_headers()  # "endless": no length, the body runs until the connection closes
        if fault == "endless":
            self.wfile.write(b'{"choices": [')
        chunk, pause = (b" ", 0.2) if fault == "trickle" else (b"0, " * 20000, 0.01)
        end = time.monotonic() + self.server.FAULT_S
        try:
            while time.monotonic() < end:
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client hung up
            pass

    def do_GET(self):
        self._send(200, {"data": [{"id": "tiny-teacher"}]})

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests += 1
        time.sleep(server.delay)
        with server.lock:
            failing = server.fail_after is not None and len(server.answered) >= server.fail_after
            if failing:
                server.failures += 1
        if failing and server.fault:
            return self._send_faulty(server.fault)
        if failing:
            return self._send(server.fail_status, {"error": f"HTTP {server.fail_status} on demand"})
        with server.lock:
            server.answered.append(payload["messages"][-1]["content"])
            server.answered_per_key[self.headers.get("Authorization")] += 1
        if server.invalid_json:
            page = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            return self.wfile.write(page)
        text = server.reply(payload)
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}],
                         "usage": {"completion_tokens": len(text.split())}})


@pytest.fixture
def server():
    srv = ChatServer()
    yield srv
    srv.shutdown()
    srv.server_close()


def _rows(*kinds: str) -> Dataset:
    """Classifier prompts whose text tells `ChatServer` how to answer; labels alternate 1, 0, 1 ..."""
    rows = [{"prompt": CLINIFACT_BINARY_TEMPLATE.to_messages(
                {"claim": f"[{kind}] {i}", "article_title": "T", "article_abstract": "A"}),
             "label": (i + 1) % 2} for i, kind in enumerate(kinds)]
    return Dataset.from_list(rows)


def _json_lines(path) -> list[dict]:
    """The records of a JSON Lines file, skipping a line cut short by a kill."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accept_answer():
    because = BECAUSE
    assert accept_answer(f"{because}\nAnswer: Yes\nThanks!", 1, FMT) == f"{because}\nAnswer: Yes"
    assert accept_answer(f"{because}\nAnswer: No", 1, FMT) is None
    # The verdict line becomes the canonical one, wherever the word stands and whatever follows it.
    for worded in ("**Answer**: yes, as the abstract shows", "Answer:\n**Yes**", "## Answer: Yes."):
        assert accept_answer(f"{because}\n{worded}", 1, FMT) == f"{because}\nAnswer: Yes"
    twice = f"{because}\nAnswer: yes\n{because}\n## Answer: Yes."
    assert accept_answer(twice, 1, FMT) == f"{because}\nAnswer: yes\n{because}\nAnswer: Yes"
    assert accept_answer(f"{because}\nAnswer: Yes\nSo, Answer: Yes.", 1, FMT) == f"{because}\nAnswer: Yes"
    # Other wordings state no verdict: kept only through the follow-up.
    assert accept_answer(f"{because}\n**Final answer**: yes", 1, FMT) is None
    assert accept_answer(f"{because}\nThe answer is yes.", 1, FMT, follow_up="Answer: Yes") == (
        f"{because}\nThe answer is yes.\nAnswer: Yes"
    )
    decision = VerdictFormat({0: "Refuted", 1: "Supported"}, prefix="Decision:")
    assert accept_answer(f"{because}\nDecision: supported", 1, decision) == f"{because}\nDecision: Supported"
    assert accept_answer(f"{because}\nAnswer: Supported", 1, decision) is None
    assert accept_answer("Answer: Yes", 1, FMT) is None  # a verdict alone explains nothing
    assert accept_answer("So the answer to the question is Yes.", 1, FMT, follow_up="Answer: Yes") is None
    assert accept_answer(f"{because}\nAnswer: Yes", 1, FMT, min_words=40) is None
    assert accept_answer(because, 1, FMT) is None
    # A verdict-less answer is kept only when the teacher's own follow-up reply states the gold label.
    assert accept_answer(because, 1, FMT, follow_up="Answer: Yes.") == f"{because}\nAnswer: Yes"
    assert accept_answer(because, 1, FMT, follow_up="Answer: No") is None
    assert accept_answer(because, 1, FMT, follow_up="I am not sure.") is None
    assert accept_answer(f"{because}\nAnswer: No", 1, FMT, follow_up="Answer: Yes") is None


def test_follow_up_offers_every_verdict():
    follow = follow_up_messages([{"role": "user", "content": "q"}], "because", FMT)
    assert follow[1] == {"role": "assistant", "content": "because"}
    assert '"Answer: No" or "Answer: Yes"' in follow[2]["content"]


def test_teacher_messages_state_the_gold_label():
    prompt = CLINIFACT_BINARY_TEMPLATE.to_messages({"claim": "c", "article_title": "t", "article_abstract": "a"})
    messages = teacher_messages(prompt, 0, FMT)
    assert messages[0] == prompt[0]
    assert '"No"' in messages[-1]["content"] and "Answer: No" in messages[-1]["content"]
    assert FMT.instruction not in messages[-1]["content"]


def test_cache_survives_a_line_cut_short(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a", "text": "one"}\n{"key": "b", "te')
    cache = AnswerCache(path)
    assert "a" in cache and "b" not in cache
    cache.extend([{"key": "b", "text": "two"}])
    assert AnswerCache(path)["b"]["text"] == "two"


def test_openai_teacher_happy_path_and_retries(server):
    teacher = OpenAITeacher(server.url, max_retries=2, concurrency=2)
    convs = [teacher_messages(p, 1, FMT) for p in _rows("always", "always")["prompt"]]
    answers = teacher.generate(convs, max_new_tokens=16)
    assert answers == [f"{GOOD_REASON}\nAnswer: Yes\nHope this helps!"] * 2
    assert teacher.model == "tiny-teacher" and teacher.generated_tokens > 0
    server.fail_after = 2  # every further request fails: three tries, then a clear error
    with pytest.raises(TeacherError, match=re.escape(server.url) + r".*after 3 attempts.*HTTP 503"):
        teacher.generate(convs[:1], max_new_tokens=16)
    assert server.failures == 3


@pytest.mark.parametrize("status, retried", [(429, True), (500, True), (400, False), (404, False)])
def test_openai_teacher_retries_rate_limits_and_server_errors_only(server, status, retried):
    teacher = OpenAITeacher(server.url, model="m", max_retries=2)
    server.fail_after, server.fail_status = 0, status
    with pytest.raises(TeacherError, match=f"HTTP {status}") as error:
        teacher.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=4)
    assert server.requests == (3 if retried else 1)
    assert ("after 3 attempts" if retried else "refused the request") in str(error.value)


def test_openai_teacher_gives_up_on_a_hanging_endpoint(server):
    server.delay = 3.0
    teacher = OpenAITeacher(server.url, model="m", timeout=0.3, max_retries=1)
    start = time.monotonic()
    with pytest.raises(TeacherError, match=r"did not answer within 0\.3 s, 2 attempts"):
        teacher.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=4)
    assert server.requests == 2 and time.monotonic() - start < 2.5


@pytest.mark.parametrize("fault, message", [
    ("trickle", r"did not finish its reply within 1 s \(2 attempts\)"),
    ("endless", r"sent a reply of more than 65536 bytes \(2 attempts\)"),
    ("bad_json", r"answered with a body that is not JSON; it begins: '\{\"choices\": \[\{\"message\": oops' "
                 r"\(2 attempts\)"),
])
def test_openai_teacher_bounds_each_reply_in_time_and_size(server, fault, message):
    """A reply trickled byte by byte (each byte within the read timeout), one without end, or broken JSON: each try
    ends at the deadline or the size cap, is retried, then fails naming the URL."""
    server.fail_after, server.fault = 0, fault
    teacher = OpenAITeacher(server.url, model="m", timeout=1.0, max_retries=1, max_reply_bytes=2**16)
    with pytest.raises(TeacherError, match=re.escape(f"{server.url}/chat/completions ") + message):
        teacher.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=4)
    assert server.requests == 2


def test_a_teacher_trickling_its_reply_fails_the_command_and_keeps_the_answers(server, tmp_path, capsys):
    server.fail_after, server.fault = 2, "trickle"
    assert _synthesize(server, tmp_path, "--teacher_timeout", "1", "--teacher_concurrency", "1") == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"clsgen-hf synthesize: error: {server.url}/chat/completions did not finish its reply")
    assert len(AnswerCache(tmp_path / "out.cache.jsonl")) == 2 and not (tmp_path / "out.jsonl").exists()
    server.fault = None
    server.fail_after = None
    assert _synthesize(server, tmp_path) == 0 and len(server.answered) == 4  # the two kept answers are not asked again


@pytest.mark.parametrize("concurrency", [1, 3])
def test_synthesis_filters_retries_and_reports(tmp_path, concurrency):
    dataset = _rows("always", "retry", "never", "late", "retry")
    teacher = ScriptedTeacher(concurrency)
    out = synthesize_explanations(dataset, teacher, prompt_template=CLINIFACT_BINARY_TEMPLATE, max_retries=1,
                                  batch_size=2, cache_path=tmp_path / "cache.jsonl", save_to=tmp_path / "out.jsonl",
                                  show_progress=False)
    assert out.column_names == ["prompt", "completion", "label"]
    assert out["label"] == [1, 0, 0, 1]  # input order, "never" dropped
    for row in out:
        assert row["completion"][0]["role"] == "assistant"
        assert FMT.read(row["completion"][0]["content"]) == row["label"]
        assert row["completion"][0]["content"].endswith(FMT.line(row["label"]))
    report = SynthesisReport.from_dataset(out)
    assert (report.rows, report.first_try, report.after_retries, report.dropped) == (
        {0: 2, 1: 3}, {0: 1, 1: 1}, {0: 1, 1: 1}, {1: 1})
    assert report.follow_ups == 1 and "first try" in str(report)
    assert report.generated == 5 + 2 + 3 + 1  # answers, follow-ups (never, late), retries, follow-up (never)
    meta = json.loads((tmp_path / "out.meta.json").read_text())
    assert meta["teacher"] == "scripted" and meta["prompt_template"] == CLINIFACT_BINARY_TEMPLATE.to_dict()
    assert len(Dataset.from_json(str(tmp_path / "out.jsonl"))) == 4
    assert len(_json_lines(tmp_path / "cache.jsonl")) == 11
    # Same arguments again: everything comes from the cache.
    again = synthesize_explanations(dataset, teacher, prompt_template=CLINIFACT_BINARY_TEMPLATE, max_retries=1,
                                    cache_path=tmp_path / "cache.jsonl", show_progress=False)
    assert len(teacher.asked) == 11 and again["completion"] == out["completion"]
    assert SynthesisReport.from_dataset(again).reused == 11


def test_endpoint_down_fails_clearly_and_keeps_the_cache(server, tmp_path):
    """Two requests in flight at once: the answers that came back stay cached, nothing new is sent after the failure,
    and the rerun asks only for the rest."""
    cache = tmp_path / "cache.jsonl"
    dataset = _rows("always", "always", "always", "always", "always", "always")
    server.fail_after = 2  # two answers, then the server goes down
    teacher = OpenAITeacher(server.url, max_retries=1, concurrency=2)
    with pytest.raises(TeacherError, match=re.escape(server.url)):
        synthesize_explanations(dataset, teacher, prompt_template=CLINIFACT_BINARY_TEMPLATE, cache_path=cache,
                                show_progress=False)
    assert len(AnswerCache(cache)) == 2
    assert server.failures <= 2 * 2  # the requests in flight when it failed, each tried twice; no new ones
    closed = OpenAITeacher(f"http://127.0.0.1:{_free_port()}/v1", model="m", max_retries=1)
    with pytest.raises(TeacherError, match=r"127\.0\.0\.1.*could not be reached after 2 attempts"):
        closed.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=4)
    server.fail_after = None
    synthesize_explanations(dataset, teacher, prompt_template=CLINIFACT_BINARY_TEMPLATE, cache_path=cache,
                            show_progress=False)
    assert len(server.answered) == 6  # the two cached answers were not asked for again


def test_make_teacher_specs():
    bare = make_teacher("openai:http://127.0.0.1:8000", model="m")
    assert bare.url == "http://127.0.0.1:8000/v1/chat/completions" and bare.name == "openai:http://127.0.0.1:8000/v1#m"
    assert OpenAITeacher("http://h/api/chat/completions").url == "http://h/api/chat/completions"
    assert make_teacher("openai:http://h/v1", concurrency=6).concurrency == 6
    with pytest.raises(ValueError, match="Unknown teacher"):
        make_teacher("bard:x")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(TeacherError, match="pip install vllm"):
            make_teacher("vllm:some/model")


@pytest.mark.slow
def test_embedded_teacher_on_clinifact(tmp_path):
    """The real SmolLM2 teacher on 4 CliniFact rows: right columns, kept verdicts equal labels, counts add up.

    `min_words=1` keeps its short answers too, so that some rows are kept and checked (it keeps about a quarter at
    the default of 20).
    """
    dataset = load_clinifact(CLINIFACT_DIR, splits="validation").select(range(4))
    teacher = TransformersTeacher()
    out = synthesize_explanations(dataset, teacher, prompt_template=CLINIFACT_BINARY_TEMPLATE, max_retries=0,
                                  batch_size=4, max_new_tokens=48, min_words=1, require_every_class=False,
                                  cache_path=tmp_path / "cache.jsonl")
    assert out.column_names == ["prompt", "completion", "label"]
    assert all(row["prompt"] in dataset["prompt"] for row in out)  # the classifier's prompt, not the teacher's
    for row in out:
        assert FMT.read(row["completion"][0]["content"]) == row["label"]
    report = SynthesisReport.from_dataset(out)
    assert report.kept == len(out) == sum(report.first_try.values())
    assert report.kept + sum(report.dropped.values()) == sum(report.rows.values()) == 4
    assert 4 <= report.generated <= 8  # four answers, then at most one follow-up each
    assert 0 < report.generated_tokens == teacher.generated_tokens
    assert len(_json_lines(tmp_path / "cache.jsonl")) == report.generated


def _synthesize(server, tmp_path, *extra) -> int:
    """`clsgen-hf synthesize` (in this process) on four rows of a user CSV, labels 0, 1, 0, 1."""
    source = tmp_path / "rows.csv"
    if not source.exists():
        Dataset.from_dict({"claim": [f"Claim {i} about a trial." for i in range(4)], "label": [0, 1, 0, 1]}).to_csv(
            source, index=False)
    return cli_main(["synthesize", "--input", str(source), "--text_fields", "claim", "--teacher",
                     f"openai:{server.url}", "--output", str(tmp_path / "out.jsonl"), "--teacher_retries", "0",
                     "--no_progress", *extra])


def test_answers_not_kept_fail_the_run_and_are_asked_again_on_request(server, tmp_path, capsys):
    server.broken = True
    assert _synthesize(server, tmp_path) == 1
    error = capsys.readouterr().err
    assert "No explanation stated the gold verdict for class(es) 0, 1" in error and "retry_rejected" in error
    assert not (tmp_path / "out.jsonl").exists()
    asked = len(server.answered)
    assert asked == 8  # four answers, four follow-ups, all cached

    server.broken = False  # the endpoint is fixed: the cache alone still keeps nothing, and says so
    assert _synthesize(server, tmp_path) == 1
    assert "No explanation stated" in capsys.readouterr().err and len(server.answered) == asked
    assert _synthesize(server, tmp_path, "--retry_rejected") == 0
    assert len(server.answered) == asked + 4 and len(_json_lines(tmp_path / "out.jsonl")) == 4
    assert _synthesize(server, tmp_path) == 0 and len(server.answered) == asked + 4  # kept answers are reused


def test_changed_generation_settings_are_asked_afresh(server, tmp_path):
    assert _synthesize(server, tmp_path) == 0 and len(server.answered) == 4
    assert _synthesize(server, tmp_path, "--teacher_max_new_tokens", "64") == 0 and len(server.answered) == 8
    assert _synthesize(server, tmp_path, "--teacher_temperature", "0.3") == 0
    assert len(server.answered) == 8  # first tries are greedy: the temperature of retries does not change them
    assert _synthesize(server, tmp_path, "--teacher_instruction", 'Say why the answer is "{answer}". {text}') == 0
    assert len(server.answered) == 12


def test_a_class_without_kept_explanations_fails(tmp_path):
    teacher = ScriptedTeacher()
    with pytest.raises(TeacherError, match=r"class\(es\) 0;.*0 \(No\) 0 of 1, 1 \(Yes\) 1 of 1"):
        synthesize_explanations(_rows("always", "never"), teacher, prompt_template=CLINIFACT_BINARY_TEMPLATE,
                                max_retries=0, cache_path=tmp_path / "cache.jsonl", save_to=tmp_path / "out.jsonl",
                                show_progress=False)
    assert not (tmp_path / "out.jsonl").exists()
    partial = synthesize_explanations(_rows("always", "never"), teacher, prompt_template=CLINIFACT_BINARY_TEMPLATE,
                                      max_retries=0, cache_path=tmp_path / "cache.jsonl", require_every_class=False,
                                      show_progress=False)
    assert partial["label"] == [1]


def test_an_endpoint_answering_no_json_is_named_with_its_body(server, tmp_path, capsys):
    server.invalid_json = True
    teacher = OpenAITeacher(server.url, model="m")
    with pytest.raises(TeacherError, match=re.escape(f"{server.url}/chat/completions answered with a body that is not "
                                                     "JSON") + r".*begins: '<html><body>502 Bad Gateway"):
        teacher.generate([[{"role": "user", "content": "hi"}]], max_new_tokens=4)
    assert _synthesize(server, tmp_path) == 1
    assert "not JSON" in capsys.readouterr().err


def test_command_reports_bad_options_and_input_in_one_line(server, tmp_path, capsys):
    source = tmp_path / "rows.csv"
    Dataset.from_dict({"claim": ["c"], "label": [0]}).to_csv(source, index=False)
    capsys.readouterr()
    common = ["synthesize", "--output", str(tmp_path / "out.jsonl")]
    for argv, message in [
        ([*common, "--input", str(source)], "--text_fields is required"),
        ([*common, "--input", str(tmp_path / "missing.csv"), "--text_fields", "claim"], "no such file"),
        ([*common, "--input", f"clinifact:{tmp_path}"], "CliniFact files missing"),
        ([*common, "--input", str(source), "--text_fields", "claim", "--teacher", "self"], "--teacher self"),
        ([*common, "--input", str(source), "--teacher", "bard:x"], "--teacher 'bard:x'"),
        ([*common, "--input", str(source), "--teacher_concurrency", "0"], "--teacher_concurrency must be"),
        ([*common, "--input", "clinifact:x", "--clinifact_view", "both"], "--clinifact_view must be"),
    ]:
        assert cli_main(argv) == 2, argv
        error = capsys.readouterr().err.strip()
        assert error.startswith("clsgen-hf synthesize: error: ") and message in error and "\n" not in error
    assert server.requests == 0


def test_command_reads_a_config_file(server, tmp_path):
    """`--config` holds any option (lists as YAML lists); the command line overrides it."""
    Dataset.from_dict({"title": ["T0", "T1"], "claim": [f"Claim {i}." for i in range(2)], "label": [0, 1]}).to_csv(
        tmp_path / "rows.csv", index=False)
    config = tmp_path / "synthesize.yaml"
    config.write_text(f"input: {tmp_path / 'rows.csv'}\noutput: {tmp_path / 'out.jsonl'}\n"
                      "text_fields: [title, claim]\n"
                      f"teacher: openai:{server.url}\nteacher_retries: 0\nteacher_concurrency: 2\nprogress: false\n")
    assert cli_main(["synthesize", "--config", str(config), "--max_rows", "1"]) == 0
    assert len(server.answered) == 1 and len(_json_lines(tmp_path / "out.jsonl")) == 1
    assert "Title: T0" in _json_lines(tmp_path / "out.jsonl")[0]["prompt"][1]["content"]
