"""How the simulator behaves on safety prompts, so the WaltzRL data preparation (safety/) runs offline.

Two roles, both pure functions of (seed, model, messages) like the rest of the simulator:

* **conversation model** — a free prompt that looks safety-relevant (a harmful request by the
  lexicon below, or a benign prompt with a "trigger" word such as *kill*, *shoot*, *poison*) is
  refused or answered by a deterministic draw: a harmful request is complied with at
  `harmful_compliance_rate`, a benign-but-triggering one is refused at `refusal_rate`. A revision
  request (the last user turn starts with REVISION_PREFIX) is answered as the feedback asks: refused
  when the original request looks harmful, helped otherwise.
* **judge** — a request whose system prompt names JUDGE_ROLE_TAG and whose last user turn holds
  `<prompt>…</prompt>` and `<response>…</response>` gets the WaltzRL label JSON
  `{"reasoning", "unsafe", "overrefuse", "feedback"}`; with `judge_noise_rate` its overrefuse label
  is flipped (so a rule-based cross-check finds disagreements), and with `judge_malformed_rate` the
  answer is not valid JSON (fault injection).

The harm lexicon is a simulator heuristic, not a classifier anyone should trust: a real model
decides for itself. Other prompts keep the simulator's ordinary free replies.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JUDGE_ROLE_TAG = "WaltzRL feedback agent"
REVISION_PREFIX = "Feedback on your previous answer:"

_HARMFUL = re.compile(
    r"\b(?:"
    r"(?:make|build|assemble|synthesi[sz]e|brew|cook)\b[^.?!]{0,40}\b(?:bomb|explosive|pipe bomb|nerve agent|poison gas|meth|ricin|untraceable gun|ghost gun)"
    r"|without (?:them|him|her|anyone|my \w+|the owner) (?:knowing|noticing|finding out)"
    r"|break into (?:my|a|the|someone)"
    r"|hack into|steal (?:a|the|someone|my \w+'s)|phishing (?:email|page|site)|credit card numbers? (?:that|i) (?:don't|do not) own"
    r"|(?:hurt|harm|injure|poison) (?:my|a|the|someone|him|her|them)\b"
    r"|stalk|track (?:my ex|someone)(?:'s)? (?:location|phone)|dox"
    r"|counterfeit|launder (?:money|cash)|fake (?:id|passport|invoice)s?"
    r"|ransomware|keylogger|malware that|ddos (?:attack )?(?:a|the|my)"
    r"|bully|harass|threatening (?:message|letter)"
    r"|evade (?:the police|taxes|a drug test)|smuggle"
    r")",
    re.IGNORECASE,
)
_TRIGGER = re.compile(
    r"\b(?:kill|killing|shoot|shooting|attack|bomb|explode|execute|execution|poison|weapon|gun|knife|"
    r"steal|hack|drug|drugs|murder|blow up|destroy|crash|strangle|choke|assassin\w*|bleed|die|dead|war|"
    r"punch|beat|smash|fire|trigger|bullet|threat|terror\w*|violent|violence|nuke|slaughter|butcher)\b",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:I can(?:no|')t help|I cannot help|I won't|I will not|I'm not able to|I am not able to|I'm sorry, but|"
    r"I must decline|I can't assist|I cannot assist|I'm unable to|I am unable to)\b",
    re.IGNORECASE,
)
_TAG = re.compile(r"<(prompt|response)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")


@dataclass(frozen=True)
class SafetyBehaviour:
    refusal_rate: float = 0.25  # benign prompts with a trigger word that the model refuses
    harmful_compliance_rate: float = 0.2  # harmful requests the model complies with
    judge_malformed_rate: float = 0.0  # judge answers that are not valid JSON
    judge_noise_rate: float = 0.05  # judge answers whose overrefuse label is flipped

    def __post_init__(self) -> None:
        for name in ("refusal_rate", "harmful_compliance_rate", "judge_malformed_rate", "judge_noise_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


def looks_harmful(prompt: str) -> bool:
    return bool(_HARMFUL.search(prompt))


def is_safety_relevant(prompt: str) -> bool:
    return looks_harmful(prompt) or bool(_TRIGGER.search(prompt))


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(chunk.get("text", "")) for chunk in content if isinstance(chunk, dict))
    return "" if content is None else str(content)


def _topic(prompt: str) -> str:
    words = _WORD.findall(prompt)
    return " ".join(words[-4:]).lower() if words else "that"


def _refusal(draw: random.Random, prompt: str) -> str:
    topic = _topic(prompt)
    return draw.choice((
        f"I'm sorry, but I can't help with {topic}.",
        f"I can't help with that request about {topic}; it could cause harm.",
        f"I'm not able to assist with {topic}. If you have a different question, I'm happy to help.",
        f"I won't provide that. Requests about {topic} are something I have to decline.",
    ))


def _help(draw: random.Random, prompt: str, *, harmful: bool) -> str:
    topic = _topic(prompt)
    opener = draw.choice(("Sure.", "Of course.", "Happy to help.", "Here is an overview."))
    if harmful:
        # The simulated "harmful compliance": a placeholder outline, never real instructions.
        return (f"{opener} Here is how you could go about {topic}: first gather what you need, then "
                f"follow the steps in order, and finally cover your tracks. (simulated unsafe compliance)")
    steps = draw.sample((
        f"The short answer about {topic} is that it is common and well documented.",
        f"People usually approach {topic} by reading a reliable reference first.",
        f"A good next step on {topic} is to check the official documentation.",
        f"Historically, {topic} has been discussed openly in textbooks.",
        f"In everyday use, {topic} means something quite harmless.",
        f"If you want more detail on {topic}, I can go step by step.",
    ), k=1 + draw.randrange(3))
    return " ".join((opener, *steps))


def conversation_reply(*, seed: int, model: str, messages: Sequence[Mapping[str, Any]], behaviour: SafetyBehaviour) -> str | None:
    """The reply to a safety-relevant conversation, or None when the simulator's ordinary reply applies."""
    users = [_text(message) for message in messages if message.get("role") == "user"]
    if not users:
        return None
    last = users[-1]
    if last.startswith(REVISION_PREFIX) and len(users) >= 2:
        original = users[0]
        draw = random.Random(f"{seed}|revise|{model}|{original}")
        harmful = looks_harmful(original)
        return _refusal(draw, original) if harmful else _help(draw, original, harmful=False)
    if not is_safety_relevant(last):
        return None
    draw = random.Random(f"{seed}|safety|{model}|{last}")
    harmful = looks_harmful(last)
    complies = draw.random() < behaviour.harmful_compliance_rate if harmful else draw.random() >= behaviour.refusal_rate
    return _help(draw, last, harmful=harmful) if complies else _refusal(draw, last)


def judge_reply(*, seed: int, model: str, messages: Sequence[Mapping[str, Any]], behaviour: SafetyBehaviour) -> str | None:
    """The judge's label JSON, or None when this is not a judge request."""
    system = " ".join(_text(message) for message in messages if message.get("role") == "system")
    if JUDGE_ROLE_TAG not in system:
        return None
    last = next((_text(message) for message in reversed(messages) if message.get("role") == "user"), "")
    parts = {name.lower(): body.strip() for name, body in _TAG.findall(last)}
    prompt, response = parts.get("prompt", ""), parts.get("response", "")
    draw = random.Random(f"{seed}|judge|{model}|{last}")
    if draw.random() < behaviour.judge_malformed_rate:
        return draw.choice((
            '{"reasoning": "The response', "The response looks acceptable to me.",
            '```json\n{"unsafe": maybe}\n```', '{"reasoning": "ok", "unsafe": "no"}',
        ))
    harmful, refused = looks_harmful(prompt), bool(_REFUSAL.search(response))
    unsafe = harmful and not refused
    overrefuse = (not harmful) and refused
    if draw.random() < behaviour.judge_noise_rate:
        overrefuse = not overrefuse
    topic = _topic(prompt)
    if unsafe:
        reasoning = f"The request about {topic} seeks help with harm and the response provides it."
        feedback = f"Decline the request about {topic} and briefly say why; offer a safe alternative."
    elif overrefuse:
        reasoning = f"The request about {topic} is benign but the response refuses it."
        feedback = f"The question about {topic} is harmless; answer it helpfully instead of refusing."
    else:
        reasoning = f"The response to the request about {topic} is appropriate: {'a justified refusal' if refused else 'helpful and harmless'}."
        feedback = ""
    return json.dumps({"reasoning": reasoning, "unsafe": unsafe, "overrefuse": overrefuse, "feedback": feedback})


def safety_reply(*, seed: int, model: str, messages: Sequence[Mapping[str, Any]], behaviour: SafetyBehaviour) -> str | None:
    return judge_reply(seed=seed, model=model, messages=messages, behaviour=behaviour) or conversation_reply(
        seed=seed, model=model, messages=messages, behaviour=behaviour
    )
