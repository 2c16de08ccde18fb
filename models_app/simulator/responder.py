"""What a simulated model says: token counts, the quality knob, and plausible free replies.

Everything here is a pure function of (seed, model, messages), so a benchmark run against the
simulator gives the same scores every time for the same seed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .catalog import base_model_of
from .markers import AnswerKey, parse_answer_marker, strip_answer_markers
from .safety import SafetyBehaviour, safety_reply

CHARS_PER_TOKEN = 4


def stable_hash(*parts: object) -> int:
    """A 64-bit hash that, unlike hash(), is the same in every process."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def unit_draw(*parts: object) -> float:
    """A deterministic number in [0, 1)."""
    return stable_hash(*parts) / 2**64


def count_tokens(text: str) -> int:
    """About one token per four characters, and never zero: usage grows with text length."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or Mistral/OpenAI content chunks. The
    OpenAI-compatible provider reads its servers' answers with it too (they are the same JSON)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(chunk.get("text", "")) for chunk in content if isinstance(chunk, dict))
    return str(content)


def accuracy_for(model: str, quality: Mapping[str, float]) -> float:
    """The configured probability that `model` answers a marked question correctly."""
    if model in quality:
        return quality[model]
    patterns = sorted((pattern for pattern in quality if any(ch in pattern for ch in "*?[")), key=len, reverse=True)
    for pattern in patterns:
        if fnmatch.fnmatchcase(model, pattern):
            return quality[pattern]
    return 0.5


@dataclass(frozen=True)
class ChatReply:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


def compose_reply(
    *,
    seed: int,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    quality: Mapping[str, float],
    max_tokens: int | None = None,
    safety: SafetyBehaviour | None = None,
) -> ChatReply:
    texts = [message_text(message.get("content")) for message in messages]
    prompt_tokens = sum(count_tokens(text) for text in texts)
    answer_key, question = _find_answer_key(messages)
    if answer_key is not None:
        text = _answer_marked_question(seed=seed, model=model, key=answer_key, question=question, quality=quality)
    else:
        # Safety prompts (refusals, harmful compliance, the WaltzRL judge) before ordinary free replies.
        text = safety_reply(seed=seed, model=model, messages=messages, behaviour=safety or SafetyBehaviour()) \
            or _free_reply(seed=seed, model=model, prompt=_last_user_text(messages))
    finish_reason = "stop"
    if max_tokens is not None and count_tokens(text) > max_tokens:
        text = text[: max_tokens * CHARS_PER_TOKEN]
        finish_reason = "length"
    return ChatReply(
        text=text, finish_reason=finish_reason, prompt_tokens=prompt_tokens, completion_tokens=count_tokens(text)
    )


def _find_answer_key(messages: Sequence[Mapping[str, Any]]) -> tuple[AnswerKey | None, str]:
    """The marker nearest the end of the conversation, and its message's text without it."""
    for message in reversed(messages):
        text = message_text(message.get("content"))
        key = parse_answer_marker(text)
        if key is not None:
            return key, strip_answer_markers(text)
    return None, ""


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return message_text(messages[-1].get("content")) if messages else ""


def _answer_marked_question(
    *, seed: int, model: str, key: AnswerKey, question: str, quality: Mapping[str, float]
) -> str:
    # The draw depends on the model's *base*, not the model: a fine-tuned model finds hard the
    # same questions its base finds hard, so with a higher accuracy it answers a superset of what
    # its base answers. Paired comparisons then measure the fine-tune, not sampling noise.
    normalized_question = " ".join(question.lower().split())
    draw = unit_draw(seed, "quality", base_model_of(model), normalized_question, key.correct)
    if draw < accuracy_for(model, quality):
        return key.correct
    return _wrong_answer(key, random.Random(stable_hash(seed, "miss", model, normalized_question)))


_GENERIC_MISSES = (
    "I'm not sure about that.",
    "I don't have enough information to answer reliably.",
    "It depends on the context.",
    "I could not find a definitive answer.",
)
_FLIPS = {"yes": "no", "no": "yes", "true": "false", "false": "true"}
_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?")


def _wrong_answer(key: AnswerKey, draw: random.Random) -> str:
    correct = key.correct
    alternatives = [alt for alt in key.wrong_alternatives if alt.strip().lower() != correct.strip().lower()]
    if alternatives:
        return draw.choice(alternatives)
    number = _NUMBER.fullmatch(correct.strip())
    if number:
        decimals = len(number.group(1) or "")
        value = float(correct)
        step = max(10 ** -decimals, round(abs(value) * 0.1, decimals))
        wrong = value + step * draw.choice((-2, -1, 1, 2))
        return f"{wrong:.{decimals}f}"
    flipped = _FLIPS.get(correct.strip().lower())
    if flipped:
        return flipped.capitalize() if correct.strip()[:1].isupper() else flipped
    return draw.choice(_GENERIC_MISSES)


_OPENERS = ("Sure.", "Good question.", "Here is a short answer.", "In short:", "Let me explain.", "")
_SENTENCES = (
    "The key point about {topic} is that it depends on {aspect}.",
    "For {topic}, start by checking {aspect} and then {action}.",
    "Most teams handle {topic} by taking time to {action}.",
    "A common mistake with {topic} is to ignore {aspect}.",
    "If {topic} is urgent, {action} first and refine later.",
    "In practice, {aspect} matters more than the exact wording.",
    "It also helps to {action} before you commit to anything.",
    "Keep {aspect} in mind, because it changes the answer.",
)
_ASPECTS = (
    "the context",
    "the constraints you have",
    "the data available",
    "the policy that applies",
    "the customer's history",
    "cost and latency",
)
_ACTIONS = (
    "review the details",
    "write down the assumptions",
    "ask a clarifying question",
    "compare the options",
    "escalate to a specialist",
    "document the decision",
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")


def _free_reply(*, seed: int, model: str, prompt: str) -> str:
    """A plausible, deterministic reply whose length varies with the prompt and the model."""
    draw = random.Random(stable_hash(seed, "free", model, prompt))
    words = _WORD.findall(prompt)
    topic = max(words, key=len).lower() if words else "this"
    sentences = [
        draw.choice(_SENTENCES).format(topic=topic, aspect=draw.choice(_ASPECTS), action=draw.choice(_ACTIONS))
        for _ in range(1 + draw.randrange(6))
    ]
    return " ".join(part for part in (draw.choice(_OPENERS), *sentences) if part)
