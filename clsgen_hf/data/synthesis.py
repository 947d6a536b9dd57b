"""Label-conditioned explanations (CLSGen's LM-head targets): a teacher is told each row's gold label and explains it.

Answers whose verdict differs from the gold label are asked again with sampling, then dropped. Every answer is cached
under its question (row, teacher, template, instruction, generation settings) as it arrives, so a rerun asks only for
what the cache lacks.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetInfo, Features, List, Value
from tqdm.auto import tqdm

from ..atomic import atomic_path
from ..json_files import write_json
from ..prompt_template import PromptTemplate
from ..verdicts import NO_VERDICT, VerdictFormat
from .cache import AnswerCache, cache_key
from .teachers import Conversation, Teacher, TeacherError


logger = logging.getLogger(__name__)

DEFAULT_TEACHER_INSTRUCTION = (
    'The correct answer to the question below is "{answer}". Explain why in two or three sentences, then end your '
    'reply with the line "{verdict_line}".\n\n{text}\n\nExplain in two or three sentences why the answer is '
    '"{answer}".'
)
"""The teacher's user message: `{text}` is the classifier's user message without its verdict instruction. The answer
stands before and after a long text because small teachers forget an instruction given only before it, and the last
words ask for reasons only because SmolLM2-135M answers "end with the line ..." with that line alone."""
VERDICT_FOLLOW_UP = "What is your final answer? Reply with one line only: {options}."
FOLLOW_UP_TOKENS = 16
MIN_WORDS = 20
"""Words a kept explanation has besides its verdict lines: "The answer is: the answer is No." explains nothing."""

_MESSAGE = List({"role": Value("string"), "content": Value("string")})
FEATURES = Features({"prompt": _MESSAGE, "completion": _MESSAGE, "label": Value("int64")})


@dataclass
class SynthesisReport:
    """Per class: rows asked for, kept at the first (greedy) try, kept after a sampled retry, dropped; then the answers
    reused from the cache and the speed at which the others were generated."""

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
    def from_dataset(cls, dataset: Dataset) -> SynthesisReport:
        """The report stored in the metadata of a dataset returned by `synthesize_explanations`."""
        data = json.loads(dataset.info.description)["report"]
        # JSON turned the integer class keys into strings.
        return cls(**{k: {int(label): v for label, v in value.items()} if isinstance(value, dict) else value
                      for k, value in data.items()})


def teacher_messages(
    prompt: Conversation, label: int, verdict_format: VerdictFormat, instruction: str = DEFAULT_TEACHER_INSTRUCTION
) -> Conversation:
    """The classifier's prompt told the gold label; its either/or verdict instruction, which confuses small teachers,
    is removed."""
    messages = [dict(message) for message in prompt]
    text = messages[-1]["content"].replace(verdict_format.instruction, "").rstrip()
    messages[-1]["content"] = instruction.format(
        text=text, answer=verdict_format.verbalizers[label], verdict_line=verdict_format.line(label)
    )
    return messages


def follow_up_messages(conversation: Conversation, answer: str, verdict_format: VerdictFormat) -> Conversation:
    """`conversation`, its verdict-less `answer`, then the question for a final answer (every label offered, so that
    the teacher, not the synthesizer, picks the verdict)."""
    options = " or ".join(f'"{verdict_format.line(label)}"' for label in sorted(verdict_format.verbalizers))
    question = VERDICT_FOLLOW_UP.format(options=options)
    return [*conversation, {"role": "assistant", "content": answer}, {"role": "user", "content": question}]


def accept_answer(
    text: str, label: int, verdict_format: VerdictFormat, follow_up: str | None = None, min_words: int = MIN_WORDS
) -> str | None:
    """The explanation to keep from a teacher answer, or `None` when it does not state `label`.

    The explanation ends on its last verdict line stating `label`, made canonical (`**Answer:** yes` -> `Answer: Yes`)
    so that every target ends alike; what follows is cut. An answer stating no verdict is kept when the teacher's
    `follow_up` reply states `label`. Fewer than `min_words` words besides the verdict lines: not kept.
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
        dataset: rows with `prompt` and `label`, as `load_classification_dataset` builds them.
        prompt_template: the template that built `prompt`; its `verdict_format` reads and writes verdicts.
        cache_path: JSON Lines file of every teacher answer; a rerun with the same arguments reuses it.
        max_retries: sampled re-asks for rows whose answer was not kept (the first ask is greedy).
        batch_size: conversations per `teacher.generate` call of a local teacher; a server (a teacher with a
            `concurrency`) gets one row per request, `concurrency` requests at once.
        teacher_instruction: the teacher's user message (`{text}`, `{answer}`, `{verdict_line}`).
        verdict_follow_up: ask a teacher whose answer states no verdict for its final answer (one short extra turn).
        min_words: see `accept_answer`.
        retry_rejected: ask again for the rows none of whose cached answers was kept (once a teacher is fixed).
        require_every_class: raise a `TeacherError` (saving nothing) when a class keeps no explanation.
        save_to: also write the result as JSON Lines there, and its metadata to `<stem>.meta.json`.

    Returns:
        A `Dataset` with `prompt`, `completion` (`[{"role": "assistant", "content": explanation}]`) and `label`, in
        input order; `info.description` holds the metadata (teacher, template, settings, report) as JSON.
    """
    for column in ("prompt", "label"):
        if column not in dataset.column_names:
            raise ValueError(f"The dataset has no {column!r} column (columns: {dataset.column_names}); "
                             "build it with `load_classification_dataset`.")
    verdict_format = prompt_template.verdict_format
    labels = [int(label) for label in dataset["label"]]
    unknown = sorted(set(labels) - set(verdict_format.verbalizers))
    if unknown:
        raise ValueError(f"Labels {unknown} have no verbalizer in the template ({verdict_format.verbalizers}).")
    job = _Job(list(dataset["prompt"]), labels, teacher, verdict_format, AnswerCache(cache_path),
               SynthesisReport(verdict_format.verbalizers), {"teacher": teacher.name, "prompt_template":
               prompt_template.to_dict(), "teacher_instruction": teacher_instruction}, max_new_tokens, temperature,
               verdict_follow_up, min_words, batch_size, show_progress)
    job.report.rows = job.per_class(range(len(labels)))
    if retry_rejected:
        job.fresh = {i for i in range(len(labels)) if not job.kept_from_cache(i, max_retries)}
    if job.fresh:
        logger.info("Asking again for the %d rows whose cached answers were not kept (retry_rejected).",
                    len(job.fresh))
    kept: dict[int, tuple[int, str]] = {}  # row -> (attempt, explanation)
    pending = list(range(len(labels)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        explanations = job.try_rows(pending, attempt)
        kept.update({i: (attempt, text) for i, text in explanations.items() if text is not None})
        pending = [i for i in pending if explanations[i] is None]
    job.report.first_try = job.per_class(i for i, (attempt, _) in kept.items() if attempt == 0)
    job.report.after_retries = job.per_class(i for i, (attempt, _) in kept.items() if attempt > 0)
    job.report.dropped = job.per_class(pending)
    logger.info("Teacher throughput: %s", job.report.throughput)
    if require_every_class:
        _check_every_class(job.report, Counter(labels[i] for i in kept), cache_path)
    metadata = {**job.settings, "max_retries": max_retries, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "verdict_follow_up": verdict_follow_up, "min_words": min_words,
                "report": job.report.to_dict()}
    order = sorted(kept)
    result = Dataset.from_dict(
        {"prompt": [job.prompts[i] for i in order],
         "completion": [[{"role": "assistant", "content": kept[i][1]}] for i in order],
         "label": [labels[i] for i in order]},
        info=DatasetInfo(description=json.dumps(metadata, ensure_ascii=False), features=FEATURES),
    )
    if save_to is not None:
        with atomic_path(save_to) as temporary:
            result.to_json(temporary, lines=True, force_ascii=False)
        write_json(Path(save_to).with_suffix(".meta.json"), metadata)
    return result


@dataclass
class _Job:
    """What the steps of one `synthesize_explanations` call share: its rows, teacher, cache, settings and report."""

    prompts: list[Conversation]
    labels: list[int]
    teacher: Teacher
    verdict_format: VerdictFormat
    cache: AnswerCache
    report: SynthesisReport
    settings: dict[str, Any]
    max_new_tokens: int
    temperature: float
    verdict_follow_up: bool
    min_words: int
    batch_size: int
    show_progress: bool
    fresh: set[int] = field(default_factory=set)  # rows asked again whatever the cache holds

    def per_class(self, rows) -> dict[int, int]:
        return dict(sorted(Counter(self.labels[i] for i in rows).items()))

    def answer_key(self, i: int, attempt: int) -> str:
        """The cache key of row `i`'s answer at `attempt` (greedy first tries do not depend on the temperature)."""
        generation = {"max_new_tokens": self.max_new_tokens, **({"temperature": self.temperature} if attempt else {})}
        return cache_key(self.prompts[i], self.labels[i], self.settings, generation, attempt)

    def accepted(self, i: int, answer: str, follow_up: str | None) -> str | None:
        return accept_answer(answer, self.labels[i], self.verdict_format,
                             follow_up if self.verdict_follow_up else None, self.min_words)

    def kept_from_cache(self, i: int, max_retries: int) -> bool:
        """Whether one of row `i`'s cached answers (tries in order, up to the first missing one) is kept."""
        for attempt in range(max_retries + 1):
            if (key := self.answer_key(i, attempt)) not in self.cache:
                return False
            answer = self.cache[key]["text"]
            if self.accepted(i, answer, self.cache.get(_follow_up_key(key, answer), {}).get("text")) is not None:
                return True
        return False

    def try_rows(self, rows: list[int], attempt: int) -> dict[int, str | None]:
        """Row -> its kept explanation (`None`: not kept) at `attempt`: the teacher's answers, and for those stating
        no verdict its reply to the follow-up question."""
        sampling = {"do_sample": attempt > 0, "temperature": self.temperature}
        conversations = {i: teacher_messages(self.prompts[i], self.labels[i], self.verdict_format,
                                             self.settings["teacher_instruction"]) for i in rows}
        keys = {i: self.answer_key(i, attempt) for i in rows}
        answers = self.ask(conversations, keys, f"try {attempt + 1}", max_new_tokens=self.max_new_tokens, **sampling)
        silent = [i for i in rows if self.verdict_follow_up and self.verdict_format.read(answers[i]) == NO_VERDICT]
        follow_ups = self.ask(
            {i: follow_up_messages(conversations[i], answers[i], self.verdict_format) for i in silent},
            {i: _follow_up_key(keys[i], answers[i]) for i in silent},
            f"try {attempt + 1}, verdict follow-ups", max_new_tokens=FOLLOW_UP_TOKENS, **sampling,
        )
        explanations = {i: self.accepted(i, answers[i], follow_ups.get(i)) for i in rows}
        self.report.follow_ups += sum(explanations[i] is not None for i in follow_ups)
        return explanations

    def ask(self, conversations: dict[int, Conversation], keys: dict[int, str], desc: str,
            **generation) -> dict[int, str]:
        """Row -> answer, from the cache or else the teacher (each answer cached as soon as it returns)."""
        todo = [i for i in conversations if keys[i] not in self.cache or i in self.fresh]
        self.report.reused += len(conversations) - len(todo)
        tokens_before, start = self.teacher.generated_tokens, time.perf_counter()
        size = 1 if hasattr(self.teacher, "concurrency") else self.batch_size  # a server: each cached as it returns
        batches = [todo[begin : begin + size] for begin in range(0, len(todo), size)]
        with tqdm(total=len(todo), desc=desc, unit="row", disable=not self.show_progress or not todo) as bar:
            generate = lambda rows: self.teacher.generate([conversations[i] for i in rows], **generation)  # noqa: E731
            for rows, texts in _in_flight(generate, batches, getattr(self.teacher, "concurrency", 1)):
                self.cache.extend([{"key": keys[i], "text": text} for i, text in zip(rows, texts)])
                bar.update(len(rows))
        self.report.generated += len(todo)
        self.report.generated_tokens += self.teacher.generated_tokens - tokens_before
        self.report.seconds += time.perf_counter() - start
        return {i: self.cache[keys[i]]["text"] for i in conversations}


def _follow_up_key(key: str, answer: str) -> str:
    return cache_key(key, "follow-up", answer, FOLLOW_UP_TOKENS)


def _check_every_class(report: SynthesisReport, kept: Counter, cache_path: str | Path) -> None:
    """Raise a `TeacherError` when a class keeps no explanation (nothing is saved then)."""
    empty = [label for label in report.rows if not kept[label]]
    if empty:
        listed = ", ".join(f"{label} ({report.verbalizers[label]}) {kept[label]} of {n}"
                           for label, n in report.rows.items())
        raise TeacherError(
            f"No explanation stated the gold verdict for class(es) {', '.join(map(str, empty))}; kept per class: "
            f"{listed}; nothing was saved. The answers are cached in {cache_path} and a rerun reuses them: fix the "
            "teacher or change its settings (a changed answer budget, temperature or instruction is asked afresh), "
            "then rerun with retry_rejected=True to ask again for the rows not kept."
        )


def _in_flight(generate, batches: list[list[int]], concurrency: int):
    """Yields `(batch, generate(batch))` for every batch, `concurrency` in flight at a time, each as soon as it
    returns: a server never waits for a slow row and a kill loses only the requests in flight. After a failure (or an
    interrupt) nothing new is sent; the answers already in flight are still yielded, then it raises."""
    if concurrency == 1:
        yield from ((batch, generate(batch)) for batch in batches)
        return
    batches, failure = iter(batches), None
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        running = {pool.submit(generate, batch): batch for batch in itertools.islice(batches, concurrency)}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                batch = running.pop(future)
                if future.exception() is not None:
                    failure = failure or future.exception()
                else:
                    yield batch, future.result()
                if failure is None and (batch := next(batches, None)) is not None:
                    running[pool.submit(generate, batch)] = batch
    if failure is not None:
        raise failure


__all__ = ["DEFAULT_TEACHER_INSTRUCTION", "SynthesisReport", "accept_answer", "follow_up_messages",
           "synthesize_explanations", "teacher_messages"]
