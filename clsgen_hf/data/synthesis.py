"""Label-conditioned explanations: a teacher is told the gold label of each row and asked to explain it.

The explanations become the LM-head targets of CLSGen. Only answers whose verdict (read by `VerdictFormat.read`, as
everywhere else) equals the gold label are kept; the others are asked again with sampling, up to `max_retries`
times. Every answer goes to a JSON Lines cache as soon as it arrives, so a restarted run asks only for what is
missing. An answer is cached under its question: the row, the teacher, the template, the instruction and the
generation settings (answer budget, and the temperature of sampled retries), so changing any of them asks afresh;
`retry_rejected=True` also asks again for the rows none of whose cached answers was kept (after a teacher is fixed).
A class for which no explanation is kept fails the run (`TeacherError`) instead of leaving it out silently.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetInfo, Features, List, Value
from tqdm.auto import tqdm

from ..prompt_template import PromptTemplate
from ..verdicts import NO_VERDICT, VerdictFormat
from .cache import AnswerCache, cache_key
from .teachers import Conversation, Teacher, TeacherError


logger = logging.getLogger(__name__)

DEFAULT_TEACHER_INSTRUCTION = (
    'The correct answer to the question below is "{answer}". Explain why in two or three sentences, then end your '
    'reply with the line "{verdict_line}".\n\n{text}\n\nExplain in two or three sentences why the answer is "{answer}".'
)
"""The teacher's user message: `{text}` is the classifier's user message (its either/or verdict instruction
removed), `{answer}` the gold verbalizer, `{verdict_line}` the exact line to end with.

Written for small teachers too: the gold answer comes before and after a long text (an instruction only before it
is forgotten, only after it ignored), and the last words ask for reasons only, because SmolLM2-135M told there to
"end with the line ..." answers with that line alone. A teacher that still omits the line is asked for its final
answer by the verdict follow-up."""
VERDICT_FOLLOW_UP = "What is your final answer? Reply with one line only: {options}."
"""Asked when an answer states no verdict; `{options}` lists every verdict line."""
FOLLOW_UP_TOKENS = 16
MIN_WORDS = 20
"""Kept explanations have at least this many words besides their verdict lines (about two short sentences): "The
answer to the question is: the answer is No." explains nothing."""

_MESSAGE = List({"role": Value("string"), "content": Value("string")})
FEATURES = Features({"prompt": _MESSAGE, "completion": _MESSAGE, "label": Value("int64")})


@dataclass
class SynthesisReport:
    """Per class: rows asked for, kept at the first (greedy) try, kept after a sampled retry, dropped; then how many
    answers came from the cache and how fast the others were generated (follow-up questions included)."""

    verbalizers: dict[int, str]
    rows: dict[int, int] = field(default_factory=dict)
    first_try: dict[int, int] = field(default_factory=dict)
    after_retries: dict[int, int] = field(default_factory=dict)
    dropped: dict[int, int] = field(default_factory=dict)
    follow_ups: int = 0
    reused: int = 0
    generated: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    @property
    def kept(self) -> int:
        return sum(self.first_try.values()) + sum(self.after_retries.values())

    @property
    def throughput(self) -> str:
        if not self.generated:
            return f"no answer generated ({self.reused} reused from the cache)"
        seconds = max(self.seconds, 1e-9)
        return (
            f"{self.generated} answers in {self.seconds:.1f} s: {self.generated / seconds:.2f} rows/s, "
            f"{self.generated_tokens / seconds:.1f} tokens/s ({self.reused} reused from the cache)"
        )

    def __str__(self) -> str:
        columns = {"rows": self.rows, "first try": self.first_try, "after retries": self.after_retries,
                   "dropped": self.dropped}
        row = lambda name, values: f"{name:<20}" + "".join(f"{v:>14}" for v in values)  # noqa: E731
        lines = [row("class", columns)]
        lines += [row(f"{label} ({self.verbalizers[label]})", [c.get(label, 0) for c in columns.values()])
                  for label in sorted(self.rows)]
        totals = [sum(c.values()) for c in columns.values()]
        lines.append(row("total", totals))
        asked = max(totals[0], 1)
        lines.append(f"kept {self.kept}/{totals[0]} ({self.kept / asked:.0%}), "
                     f"at the first try {totals[1] / asked:.0%}")
        if self.follow_ups:
            lines.append(f"{self.follow_ups} kept answers stated their verdict only when asked for it (follow-up)")
        lines.append(f"throughput: {self.throughput}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthesisReport:
        """Inverse of `to_dict` (JSON turns the integer keys into strings; they are turned back)."""
        data = {k: ({int(label): v for label, v in val.items()} if isinstance(val, dict) else val)
                for k, val in data.items()}
        return cls(**data)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> SynthesisReport:
        """The report stored in the metadata of a dataset returned by `synthesize_explanations`."""
        return cls.from_dict(json.loads(dataset.info.description)["report"])


def teacher_messages(
    prompt: Conversation, label: int, verdict_format: VerdictFormat, instruction: str = DEFAULT_TEACHER_INSTRUCTION
) -> Conversation:
    """The classifier's prompt told the gold label: its user message, without the either/or verdict instruction
    (which confuses small teachers), goes into `instruction` (see `DEFAULT_TEACHER_INSTRUCTION`)."""
    messages = [dict(message) for message in prompt]
    text = messages[-1]["content"].replace(verdict_format.instruction, "").rstrip()
    messages[-1]["content"] = instruction.format(
        text=text, answer=verdict_format.verbalizers[label], verdict_line=verdict_format.line(label)
    )
    return messages


def follow_up_messages(conversation: Conversation, answer: str, verdict_format: VerdictFormat) -> Conversation:
    """`conversation` and its verdict-less `answer`, then the question for a final answer (every label offered, so
    the teacher, not the synthesizer, picks the verdict)."""
    options = " or ".join(f'"{verdict_format.line(label)}"' for label in sorted(verdict_format.verbalizers))
    question = VERDICT_FOLLOW_UP.format(options=options)
    return [*conversation, {"role": "assistant", "content": answer}, {"role": "user", "content": question}]


def accept_answer(
    text: str, label: int, verdict_format: VerdictFormat, follow_up: str | None = None, min_words: int = MIN_WORDS
) -> str | None:
    """The explanation to keep from a teacher answer, or `None` when it does not state `label`.

    The explanation ends on the teacher's verdict: its last verdict line stating `label` becomes the canonical
    `verdict_format.line(label)` (`**Answer:** yes, as shown` -> `Answer: Yes`), so that every target ends alike,
    and what follows it (chatter) is cut. An answer stating no verdict is kept only when the teacher's `follow_up`
    reply (see `follow_up_messages`) states `label`; the canonical line then stands for that reply. Answers with
    fewer than `min_words` words besides their verdict lines explain nothing and are not kept.
    """
    canonical = verdict_format.line(label)
    text = text.strip()
    stated = verdict_format.read(text)
    if stated == NO_VERDICT and follow_up is not None and verdict_format.read(follow_up) == label:
        lines = [*text.splitlines(), canonical]
    elif stated == label:
        last = [verdict for verdict in verdict_format.verdict_lines(text) if verdict.label == label][-1]
        lines = [*text.splitlines()[: last.start], canonical]
    else:
        return None
    verdicts = verdict_format.verdict_lines("\n".join(lines))
    in_verdicts = {i for verdict in verdicts for i in range(verdict.start, verdict.end)}
    reasons = " ".join(line for i, line in enumerate(lines) if i not in in_verdicts)
    return "\n".join(lines) if len(reasons.split()) >= min_words else None


def synthesize_explanations(
    dataset: Dataset,
    teacher: Teacher,
    *,
    prompt_template: PromptTemplate,
    cache_path: str | Path,
    max_retries: int = 2,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    temperature: float = 0.7,
    teacher_instruction: str = DEFAULT_TEACHER_INSTRUCTION,
    verdict_follow_up: bool = True,
    min_words: int = MIN_WORDS,
    retry_rejected: bool = False,
    require_every_class: bool = True,
    save_to: str | Path | None = None,
    show_progress: bool = True,
) -> Dataset:
    """Ask `teacher` to explain the gold label of each row and keep the answers whose verdict matches it.

    Args:
        dataset: rows with `prompt` (the classifier's messages) and `label`, as `load_classification_dataset` builds.
        teacher: see `make_teacher`.
        prompt_template: the template that built `prompt`; its `verdict_format` reads and writes verdicts.
        cache_path: JSON Lines file of every teacher answer; a rerun with the same arguments reuses it.
        max_retries: sampled re-asks for rows whose answer was not kept (the first ask is greedy).
        batch_size: conversations per `teacher.generate` call (and per cache flush) of a local teacher; a server
            (a teacher whose `concurrency` is above 1) gets one row per request, that many requests at once.
        max_new_tokens: the teacher's answer budget.
        temperature: sampling temperature of the retries.
        teacher_instruction: the teacher's user message (`{text}`, `{answer}`, `{verdict_line}`).
        verdict_follow_up: when an answer states no verdict, ask the teacher for its final answer in the same
            conversation (one short extra turn) rather than dropping it; small teachers often omit the line.
        min_words: fewer words besides the verdict lines and an answer is not kept (see `accept_answer`).
        retry_rejected: ask again for the rows none of whose cached answers is kept (instead of reusing those
            answers), e.g. once a teacher that answered nonsense is fixed.
        require_every_class: raise a `TeacherError` when a class keeps no explanation (nothing to learn its
            explanations from); the cache keeps every answer, and nothing is saved.
        save_to: also write the result as JSON Lines there, and its metadata next to it (`<stem>.meta.json`).
        show_progress: show a tqdm bar per round of questions.

    Returns:
        A `Dataset` with `prompt`, `completion` (`[{"role": "assistant", "content": explanation}]`) and `label`,
        in input order; `info.description` holds the metadata (teacher, template, settings, report) as JSON.
    """
    for column in ("prompt", "label"):
        if column not in dataset.column_names:
            raise ValueError(f"The dataset has no {column!r} column (columns: {dataset.column_names}); "
                             "build it with `load_classification_dataset`.")
    verdict_format = prompt_template.verdict_format
    prompts, labels = list(dataset["prompt"]), [int(label) for label in dataset["label"]]
    unknown = sorted(set(labels) - set(verdict_format.verbalizers))
    if unknown:
        raise ValueError(f"Labels {unknown} have no verbalizer in the template ({verdict_format.verbalizers}).")

    cache = AnswerCache(cache_path)
    report = SynthesisReport(verdict_format.verbalizers, rows=dict(sorted(Counter(labels).items())))
    settings = {"teacher": teacher.name, "prompt_template": prompt_template.to_dict(),
                "teacher_instruction": teacher_instruction}

    def answer_key(i: int, attempt: int) -> str:  # greedy first tries do not depend on the temperature
        generation = {"max_new_tokens": max_new_tokens, **({"temperature": temperature} if attempt else {})}
        return cache_key(prompts[i], labels[i], settings, generation, attempt)

    def follow_up_key(key: str, answer: str) -> str:
        return cache_key(key, "follow-up", answer, FOLLOW_UP_TOKENS)

    def accepted(i: int, answer: str, follow_up: str | None) -> str | None:
        return accept_answer(answer, labels[i], verdict_format, follow_up if verdict_follow_up else None, min_words)

    def kept_from_cache(i: int) -> bool:
        for attempt in range(max_retries + 1):
            if (key := answer_key(i, attempt)) not in cache:
                return False
            answer = cache[key]["text"]
            follow_up = cache.records.get(follow_up_key(key, answer), {}).get("text")
            if accepted(i, answer, follow_up) is not None:
                return True
        return False

    fresh = {i for i in range(len(labels)) if not kept_from_cache(i)} if retry_rejected else set()
    if fresh:
        logger.info("Asking again for the %d rows whose cached answers were not kept (retry_rejected).", len(fresh))
    asker = _Asker(teacher, cache, batch_size, temperature, show_progress, fresh)
    kept: dict[int, str] = {}
    pending = list(range(len(labels)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        conversations = {
            i: teacher_messages(prompts[i], labels[i], verdict_format, teacher_instruction) for i in pending
        }
        keys = {i: answer_key(i, attempt) for i in pending}
        answers = asker.ask(conversations, keys, attempt, max_new_tokens, report, f"try {attempt + 1}")
        silent = [i for i in pending if verdict_follow_up and verdict_format.read(answers[i]) == NO_VERDICT]
        follow_ups = asker.ask(
            {i: follow_up_messages(conversations[i], answers[i], verdict_format) for i in silent},
            {i: follow_up_key(keys[i], answers[i]) for i in silent}, attempt, FOLLOW_UP_TOKENS, report,
            f"try {attempt + 1}, verdict follow-ups",
        )
        still = []
        for i in pending:
            explanation = accepted(i, answers[i], follow_ups.get(i))
            if explanation is None:
                still.append(i)
                continue
            kept[i] = explanation
            report.follow_ups += i in follow_ups
            counts = report.first_try if attempt == 0 else report.after_retries
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        pending = still
    report.dropped = dict(sorted(Counter(labels[i] for i in pending).items()))
    logger.info("Teacher throughput: %s", report.throughput)
    if require_every_class:
        check_every_class_kept(report, cache_path)

    metadata = {**settings, "max_retries": max_retries, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "verdict_follow_up": verdict_follow_up, "min_words": min_words,
                "report": report.to_dict()}
    order = sorted(kept)
    result = Dataset.from_dict(
        {"prompt": [prompts[i] for i in order],
         "completion": [[{"role": "assistant", "content": kept[i]}] for i in order],
         "label": [labels[i] for i in order]},
        features=FEATURES,
        info=DatasetInfo(description=json.dumps(metadata, ensure_ascii=False), features=FEATURES),
    )
    if save_to is not None:
        save_to = Path(save_to)
        save_to.parent.mkdir(parents=True, exist_ok=True)
        result.to_json(save_to, lines=True, force_ascii=False)
        save_to.with_suffix(".meta.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
    return result


def check_every_class_kept(report: SynthesisReport, cache_path: str | Path) -> None:
    """A `TeacherError` when some class asked for kept no explanation (a broken endpoint, a budget too short ...)."""
    kept = {label: report.first_try.get(label, 0) + report.after_retries.get(label, 0) for label in report.rows}
    empty = [label for label, n in report.rows.items() if n and not kept[label]]
    if not empty:
        return
    per_class = ", ".join(f"{label} ({report.verbalizers[label]}) {kept[label]} of {n}" for label, n in report.rows.items())
    raise TeacherError(
        f"No explanation stated the gold verdict for class(es) {', '.join(map(str, empty))}; kept per class: "
        f"{per_class}; nothing was saved. The answers are cached in {cache_path} and a rerun reuses them: fix the "
        "teacher or change its settings (a changed answer budget, temperature or instruction is asked afresh), then "
        "rerun with --retry_rejected to ask again for the rows not kept."
    )


@dataclass
class _Asker:
    """Gets answers from the cache or from the teacher, caching each as soon as it returns; rows in `fresh` are asked
    again whatever the cache holds."""

    teacher: Teacher
    cache: AnswerCache
    batch_size: int
    temperature: float
    show_progress: bool
    fresh: set[int] = field(default_factory=set)

    def ask(
        self, conversations: dict[int, Conversation], keys: dict[int, str], attempt: int, max_new_tokens: int,
        report: SynthesisReport, desc: str,
    ) -> dict[int, str]:
        """Row index -> answer text, for the rows of `conversations` (the first attempt greedy, later ones sampled)."""
        todo = [i for i in conversations if keys[i] not in self.cache or i in self.fresh]
        report.reused += len(conversations) - len(todo)
        if todo:
            tokens_before, start = self.teacher.generated_tokens, time.perf_counter()
            with tqdm(total=len(todo), desc=desc, unit="row", disable=not self.show_progress) as bar:
                def generate(batch: list[int]) -> list[str]:
                    return self.teacher.generate([conversations[i] for i in batch], do_sample=attempt > 0,
                                                 temperature=self.temperature, max_new_tokens=max_new_tokens)

                def record(batch: list[int], texts: list[str]) -> None:
                    self.cache.extend([{"key": keys[i], "attempt": attempt, "text": t} for i, t in zip(batch, texts)])
                    bar.update(len(batch))

                concurrency = getattr(self.teacher, "concurrency", 1)
                if concurrency > 1:
                    _in_flight(generate, record, todo, concurrency)
                else:
                    for begin in range(0, len(todo), self.batch_size):
                        batch = todo[begin : begin + self.batch_size]
                        record(batch, generate(batch))
            report.generated += len(todo)
            report.generated_tokens += self.teacher.generated_tokens - tokens_before
            report.seconds += time.perf_counter() - start
        return {i: self.cache[keys[i]]["text"] for i in conversations}


def _in_flight(generate, record, rows: list[int], concurrency: int) -> None:
    """`generate([row])` for every row, `concurrency` at a time, `record`ing each answer (in this thread) as soon as it
    returns, so that the server never waits for a slow row and a kill loses only the requests in flight. After a
    failure nothing new is sent; the answers of the requests already in flight are still recorded, then it raises."""
    stop = threading.Event()

    def ask(row: int) -> list[str] | None:
        if stop.is_set():
            return None  # not asked
        try:
            return generate([row])
        except BaseException:
            stop.set()
            raise

    failure: BaseException | None = None
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(ask, row): row for row in rows}
        try:
            for future in as_completed(futures):
                if future.exception() is not None:
                    failure = failure or future.exception()
                elif (texts := future.result()) is not None:
                    record([futures[future]], texts)
        finally:  # an interrupt (Ctrl-C) sends nothing more either
            stop.set()
    if failure is not None:
        raise failure


__all__ = ["DEFAULT_TEACHER_INSTRUCTION", "SynthesisReport", "accept_answer", "check_every_class_kept",
           "follow_up_messages", "synthesize_explanations", "teacher_messages"]
