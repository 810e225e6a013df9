"""An LLM judge of answer correctness behind an OpenAI-compatible ``/chat/completions`` endpoint.

The judge sees the question, the gold answers and the model's final answer, and replies ``CORRECT`` or
``INCORRECT`` (the prompt is ``JUDGE_PROMPT`` below, replaceable with ``eval.judge.prompt_file``). Verdicts are
cached on disk (``diskcache``), keyed by the judge model and the exact prompt, so an evaluation re-scored with
the same judge never pays for a verdict twice. A missing answer and the refusal sentence are judged incorrect
without a call, as the rule-based reward does.

The API key is read from the environment variable named by ``eval.judge.api_key_env`` and is never logged or
written anywhere; when the variable is unset no ``Authorization`` header is sent (local servers).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mmsearch_r1.errors import MMSearchError
from mmsearch_r1.protocol.actions import REFUSAL
from mmsearch_r1.reward import normalize_answer

if TYPE_CHECKING:
    from mmsearch_r1.eval.config import JudgeConfig

JUDGE_PROMPT = """You grade short answers to questions about an image.
Decide whether the predicted answer means the same thing as at least one of the gold answers.
- Ignore capitalization, punctuation, articles and extra words that do not change the meaning.
- Accept an answer that is more specific than a gold answer but still contains it (e.g. "Paris, France" for "Paris").
- Accept equivalent forms of a number, date or name (e.g. "1,000" and "1000"; "NYC" and "New York City").
- Reject an answer that names something else, lists several candidates, hedges, or declines to answer.

Question: {question}
Gold answers: {answers}
Predicted answer: {prediction}

Reply with exactly one word: CORRECT or INCORRECT."""

_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b")


class JudgeError(MMSearchError):
    """The judge endpoint could not be reached or gave a reply that holds no verdict."""


@dataclass(frozen=True)
class JudgeItem:
    """One answer to judge."""

    question: str
    answers: list[str]
    prediction: str | None


def parse_verdict(reply: str) -> bool | None:
    """True for CORRECT, False for INCORRECT, None when the reply holds neither (the first one found wins).

    >>> parse_verdict("CORRECT"), parse_verdict("incorrect."), parse_verdict("Verdict: Correct"), parse_verdict("maybe")
    (True, False, True, None)
    """
    match = _VERDICT.search(reply.upper())
    return None if match is None else match.group(1) == "CORRECT"


def render_prompt(template: str, item: JudgeItem) -> str:
    """The judging prompt for one answer; gold answers are listed joined by ``" | "``."""
    return template.format(question=item.question.strip(), answers=" | ".join(item.answers), prediction=(item.prediction or "").strip())


class LLMJudge:
    """Judges answers with a chat model; thread-safe, so ``judge_many`` runs several requests at once."""

    def __init__(self, cfg: "JudgeConfig", cache_dir: str | Path | None = None, *, transport=None):
        import diskcache
        import httpx

        self.cfg = cfg
        self.template = Path(cfg.prompt_file).read_text() if cfg.prompt_file else JUDGE_PROMPT
        for field in ("{question}", "{answers}", "{prediction}"):
            if field not in self.template:
                raise JudgeError(f"judging prompt {cfg.prompt_file} lacks the field {field}; add it to the file.")
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.client = httpx.Client(headers=headers, timeout=cfg.timeout_s, transport=transport)
        self.cache = diskcache.Cache(str(cache_dir or cfg.cache_dir or Path("judge_cache")))
        self.calls = 0

    def check(self) -> None:
        """Ask the judge about one fixed probe, uncached, so that a wrong URL, model or key stops a run before
        its generation and not after it."""
        self._ask(render_prompt(self.template, JudgeItem("What is two plus two?", ["4"], "4")))

    # --- one verdict -----------------------------------------------------------------------------

    def judge(self, item: JudgeItem) -> bool:
        """Whether ``item.prediction`` is correct; cached by (model, prompt)."""
        if item.prediction is None or not normalize_answer(item.prediction) or normalize_answer(item.prediction) == normalize_answer(REFUSAL):
            return False
        prompt = render_prompt(self.template, item)
        key = hashlib.sha256(f"{self.cfg.model}\n{prompt}".encode()).hexdigest()
        cached = self.cache.get(key)
        if cached is not None:
            return bool(cached)
        verdict = self._ask(prompt)
        self.cache.set(key, verdict)
        return verdict

    def _ask(self, prompt: str) -> bool:
        body = {"model": self.cfg.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.0, "max_tokens": 8}
        reply = self._post(body)
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"the judge at {self.url} answered without choices[0].message.content; check that it is an OpenAI-compatible chat endpoint.") from None
        verdict = parse_verdict(text)
        if verdict is None:
            raise JudgeError(f"the judge replied {text[:80]!r}, which is neither CORRECT nor INCORRECT; use a model that follows the judging prompt.")
        return verdict

    def _post(self, body: dict) -> dict:
        import httpx

        self.calls += 1
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"no reply within {self.cfg.timeout_s:g} s"
                continue
            except httpx.TransportError as error:
                last = f"cannot connect ({type(error).__name__})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise JudgeError(f"the judge at {self.url} answered HTTP {response.status_code}; check eval.judge.base_url, model and the API key variable {self.cfg.api_key_env}.")
            try:
                return response.json()
            except ValueError:
                raise JudgeError(f"the judge at {self.url} answered with a body that is not JSON; check eval.judge.base_url.") from None
        raise JudgeError(f"the judge at {self.url} failed after {self.cfg.max_retries + 1} tries ({last}); check that the server is up or raise eval.judge.timeout_s.")

    # --- many verdicts ---------------------------------------------------------------------------

    def judge_many(self, items: Sequence[JudgeItem], *, progress: bool = False) -> list[bool]:
        """Verdicts in order, ``cfg.concurrency`` requests at a time."""
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            results = pool.map(self.judge, items)
            if progress:
                from rich.progress import track

                results = track(results, total=len(items), description="judging")
            return list(results)

    def close(self) -> None:
        self.client.close()
        self.cache.close()
