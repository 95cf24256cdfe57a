"""Rules over the user's own words: explicit "remember that ..." / "forget that ...", what is an
instruction to the assistant rather than a fact, whether a fact is grounded in the message, and a
small rule-based extractor of durable first-person facts (each with the "slot" it fills, so that a
new value of the same slot updates the old one: "I moved to Lisbon" replaces "I live in Berlin").

The rule extractor is the offline default: precise on the phrasings it knows, silent on the rest."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pai_core.learning.secrets import holds_secret


@dataclass(frozen=True)
class Candidate:
    """A durable fact about the user, in the first person; `slot` names what it is the value of
    (None: a fact that sits beside others of its kind, such as one of several likes)."""

    text: str
    slot: str | None = None


@dataclass(frozen=True)
class ExplicitCommand:
    kind: str  # "remember" | "forget"
    text: str


_REMEMBER = re.compile(
    r"^\s*(?:please\s+|pai,?\s+|hey,?\s+)?(?:remember|note|keep\s+in\s+mind|don'?t\s+forget)"
    r"(?:\s+that|\s*:)\s*(?P<fact>.+?)\s*[.!]*\s*$",
    re.IGNORECASE | re.DOTALL,
)
_FORGET = re.compile(
    r"^\s*(?:please\s+|pai,?\s+|hey,?\s+)?forget\s+(?:that|about|what\s+i\s+(?:said|told\s+you)\s+about)"
    r"\s*:?\s*(?P<fact>.+?)\s*[.!]*\s*$",
    re.IGNORECASE | re.DOTALL,
)


def explicit_command(message: str) -> ExplicitCommand | None:
    """'Remember that ...' or 'forget that ...' as the whole message; None for anything else
    (a question such as 'do you remember ...?' is not a command)."""
    for kind, pattern in (("remember", _REMEMBER), ("forget", _FORGET)):
        match = pattern.match(message)
        if match and not match.group("fact").rstrip().endswith("?"):
            return ExplicitCommand(kind, as_statement(match.group("fact")))
    return None


def as_statement(text: str) -> str:
    """One sentence, capitalized, ending with a full stop."""
    text = re.sub(r"\s+", " ", text).strip().rstrip(".!")
    if not text:
        return text
    return text[0].upper() + text[1:] + "."


_INSTRUCTION_START = re.compile(
    r"^\s*(?:always|never|don'?t|do\s+not|stop|start|ignore|disregard|from\s+now\s+on|henceforth|answer|reply|"
    r"respond|say|tell\s+(?:me|everyone|the\s+user)|act\s+as|pretend|behave|you\s+(?:must|should|will|are|shall)|"
    r"make\s+sure|be\s+sure|use|write|speak|translate|summari[sz]e|forward|send|delete|store|save|learn)\b",
    re.IGNORECASE,
)
_INSTRUCTION_ANYWHERE = re.compile(
    r"\b(?:ignore|disregard|override|forget)\s+(?:all\s+|any\s+|the\s+|your\s+|previous\s+|prior\s+|above\s+)*"
    r"(?:instructions?|rules?|prompts?|guidelines?)\b|\bsystem\s+prompt\b|\byou\s+are\s+now\b|"
    r"\bnew\s+instructions?\b|\b(?:the\s+)?(?:assistant|ai|pai|model|bot)\s+(?:must|should|shall|will|has\s+to)\b|"
    r"\bjailbreak\b|\bdeveloper\s+mode\b|\bas\s+an\s+ai\b|\badmin(?:istrator)?\s+(?:access|rights|privileges)\b",
    re.IGNORECASE,
)


def is_instruction(text: str) -> bool:
    """An instruction to the assistant (or an attempt to plant one) rather than a fact about the user."""
    return bool(_INSTRUCTION_START.match(text) or _INSTRUCTION_ANYWHERE.search(text))


_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "i'm",
        "im",
        "me",
        "my",
        "mine",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "it",
        "they",
        "them",
        "his",
        "her",
        "its",
        "their",
        "is",
        "am",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "from",
        "by",
        "with",
        "and",
        "or",
        "but",
        "that",
        "this",
        "these",
        "those",
        "as",
        "so",
        "too",
        "also",
        "very",
        "really",
        "just",
        "now",
        "not",
        "no",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "will",
        "would",
        "can",
        "could",
        "should",
        "about",
        "into",
        "over",
        "than",
        "then",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "some",
        "user",
        "user's",
    ]
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def content_words(text: str) -> set[str]:
    words = set()
    for found in _WORD.findall(text.lower()):
        word = found.removesuffix("'s")
        if word not in _STOPWORDS and len(word) > 1:
            words.add(word)
    return words


def _stem(word: str) -> str:
    return word[:5]


# Words a model uses to restate a fact in the first person ("I moved to X" -> "I live in X"): they
# say what kind of fact it is, not what it is, so grounding leaves them out.
_FRAMING = frozenset(
    [
        "live",
        "lives",
        "living",
        "moved",
        "move",
        "based",
        "work",
        "works",
        "working",
        "name",
        "called",
        "named",
        "currently",
        "got",
        "like",
        "likes",
        "prefer",
        "prefers",
        "favourite",
        "favorite",
        "user",
    ]
)


def grounded(fact: str, message: str, *, share: float = 0.6) -> bool:
    """Whether most of the fact's words (by a five-letter stem) are the user's own: a fact a model
    drew from anything else (a retrieved memory, its own imagination) is not learned."""
    fact_words = content_words(fact) - _FRAMING
    if not fact_words:
        return False
    said = {_stem(word) for word in content_words(message)}
    found = sum(1 for word in fact_words if _stem(word) in said)
    return found / len(fact_words) >= share


def overlap(a: str, b: str) -> float:
    """The share of `a`'s content words that `b` has too."""
    words = content_words(a)
    if not words:
        return 0.0
    other = {_stem(word) for word in content_words(b)}
    return sum(1 for word in words if _stem(word) in other) / len(words)


def normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower())).replace("favorite", "favourite")


def sentences(message: str) -> list[str]:
    """The message's sentences, each with its own end mark ('?' tells a question)."""
    # Typographic apostrophes as plain ones, so that one set of patterns reads both.
    parts = re.findall(r"[^.!?;\n]+[.!?;]*", message.replace("\u2019", "'"))
    return [part.strip() for part in parts if part.strip()]


def statements_without_secrets(message: str) -> list[str]:
    """The sentences that may be learned from: no question, no secret, no instruction."""
    kept = []
    for sentence in sentences(message):
        if sentence.endswith("?") or holds_secret(sentence) or is_instruction(sentence):
            continue
        kept.append(sentence)
    return kept


def redacted(message: str) -> str:
    """The message less every sentence that holds a secret: what a model may see of it."""
    return " ".join(sentence for sentence in sentences(message) if not holds_secret(sentence))


# -- the rule-based extractor -----------------------------------------------------------------------

_VALUE = r"(?P<v>[A-Za-z0-9][\w'&-]*(?:\s+[\w'&-]+){0,5}?)"
_END = (
    r"(?=\s*(?:$|[,.;!?]|\s+(?:and|but|because|since|so|now|anymore|these\s+days|nowadays|with|for\s+\w+\s+years|"
    r"last|this|next|yesterday|today|recently|earlier|a\s+\w+\s+ago|in\s+\d{4})\b))"
)
# Likes and dislikes keep "cats and dogs" together, but not "hiking and I work at ...".
_LIST_END = (
    r"(?=\s*(?:$|[,.;!?]|\s+(?:but|because|since|so|now|anymore|these\s+days|nowadays|and\s+(?:i|my|i'm)|"
    r"last|this|next|yesterday|today|recently|earlier)\b))"
)
_RELATIONS = (
    "wife|husband|partner|girlfriend|boyfriend|fiancée?|sister|brother|mother|mom|mum|father|dad|son|daughter|"
    "grandmother|grandma|grandfather|grandpa|aunt|uncle|cousin|niece|nephew|best\\s+friend|boss|manager|"
    "dog|cat|puppy|kitten|parrot|hamster|horse|rabbit|doctor|dentist|landlord|roommate|flatmate"
)
_MY_ATTRIBUTES = (
    r"favou?rite\s+[a-z]+(?:\s+[a-z]+)?|birthday|hometown|home\s+town|nationality|native\s+language|"
    r"first\s+language|job|profession|occupation|job\s+title|diet|blood\s+type|shoe\s+size|star\s+sign|"
    r"zodiac\s+sign|middle\s+name|last\s+name|surname|nickname|team|religion|commute|car"
)
# What follows "I like" or "I work at" that is not a thing or a place ("I hate when ...", "I work at night").
_VAGUE_STARTS = ("to ", "it ", "that ", "this ", "these ", "those ", "when ", "how ", "what ", "the way ", "being ")
_NOT_VALUES = {"home", "night", "nights", "weekends", "the moment", "the weekend", "all", "everything", "nothing"}
_PRONOUNS = {"it", "that", "this", "them", "those", "these", "him", "her", "you", "me", "one", "so", "to"}

_RULES: tuple[tuple[re.Pattern[str], str, str | None], ...] = (
    (
        re.compile(
            rf"\bI(?:'ve|\s+have)?\s+(?:just\s+|recently\s+|finally\s+)?(?:moved|relocated)"
            rf"(?:\s+from\s+[\w\s'-]+?)?\s+to\s+{_VALUE}{_END}",
            re.IGNORECASE,
        ),
        "I live in {v}.",
        "home",
    ),
    (
        re.compile(
            rf"\bI(?:'m|\s+am)?\s+(?:now\s+|currently\s+|still\s+)?(?:live|living|based|residing)\s+in\s+{_VALUE}{_END}",
            re.IGNORECASE,
        ),
        "I live in {v}.",
        "home",
    ),
    (
        re.compile(rf"\bI\s+(?:now\s+|currently\s+)?work\s+(?:at|for)\s+{_VALUE}{_END}", re.IGNORECASE),
        "I work at {v}.",
        "employer",
    ),
    (
        re.compile(rf"\bI\s+(?:now\s+|currently\s+)?work\s+as\s+(?P<a>an?\s+)?{_VALUE}{_END}", re.IGNORECASE),
        "I work as {a}{v}.",
        "job",
    ),
    (
        re.compile(r"\b(?i:my\s+name\s+is|call\s+me)\s+(?P<v>[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)"),
        "My name is {v}.",
        "name",
    ),
    (
        re.compile(
            rf"\b(?i:my)\s+(?P<k>{_RELATIONS})(?P<n>'s\s+name)?\s+is\s+(?:called\s+|named\s+)?"
            r"(?P<v>[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)",
        ),
        "My {k}{n} is {v}.",
        "my:{k}",
    ),
    (
        re.compile(rf"\bmy\s+(?P<k>{_MY_ATTRIBUTES})\s+(?:is|are)\s+(?:now\s+)?{_VALUE}{_END}", re.IGNORECASE),
        "My {k} is {v}.",
        "my:{k}",
    ),
    (
        re.compile(
            rf"\bI\s+(?:really\s+|absolutely\s+|also\s+|do\s+)?(?P<verb>like|love|enjoy|prefer|hate|dislike|adore)\s+"
            rf"{_VALUE}{_LIST_END}",
            re.IGNORECASE,
        ),
        "I {verb} {v}.",
        None,
    ),
    (
        re.compile(
            r"\bI(?:'m|\s+am)\s+(?:now\s+)?(?:a\s+)?(?P<v>vegetarian|vegan|pescatarian|lactose\s+intolerant|"
            r"gluten\s+intolerant|diabetic|coeliac|celiac)\b",
            re.IGNORECASE,
        ),
        "I am {v}.",
        "diet",
    ),
    (
        re.compile(rf"\bI(?:'m|\s+am)\s+allergic\s+to\s+{_VALUE}{_END}", re.IGNORECASE),
        "I am allergic to {v}.",
        None,
    ),
    (
        re.compile(
            r"\bI\s+have\s+(?:a|an|one)\s+(?P<k>dog|cat|puppy|kitten|parrot|hamster|horse|rabbit)\s+"
            r"(?:called|named)\s+(?P<v>[A-Z][\w'-]*)",
            re.IGNORECASE,
        ),
        "I have a {k} called {v}.",
        None,
    ),
    (
        re.compile(rf"\bI\s+was\s+born\s+(?P<p>in|on)\s+{_VALUE}{_END}", re.IGNORECASE),
        "I was born {p} {v}.",
        "born:{p}",
    ),
    (
        re.compile(rf"\bI(?:'m|\s+am)\s+(?:learning|studying)\s+{_VALUE}{_END}", re.IGNORECASE),
        "I am learning {v}.",
        None,
    ),
)
_NEGATED = re.compile(r"\b(?:not|n't|never|no\s+longer)\b|\bif\b|\bwould\b|\bmight\b|\bmaybe\b", re.IGNORECASE)
_OTHERS = re.compile(r"^\s*(?:he|she|they|we|his|her|their|our)\b", re.IGNORECASE)


def rule_candidates(message: str) -> list[Candidate]:
    """The durable first-person facts the rules recognise in the user's message (secrets,
    questions and instructions left out first), each once."""
    found: list[Candidate] = []
    for sentence in statements_without_secrets(message):
        if _NEGATED.search(sentence) or _OTHERS.match(sentence):
            continue
        for pattern, template, slot in _RULES:
            for match in pattern.finditer(sentence):
                candidate = _candidate(match, template, slot)
                if candidate is not None and candidate not in found:
                    found.append(candidate)
    return _drop_contained(found)


def _candidate(match: re.Match[str], template: str, slot: str | None) -> Candidate | None:
    groups = {name: (value or "") for name, value in match.groupdict().items()}
    value = re.sub(r"\s+", " ", groups.get("v", "")).strip(" '\"")
    lowered = value.lower()
    if not value or lowered in _PRONOUNS or lowered in _NOT_VALUES or lowered.startswith(_VAGUE_STARTS):
        return None
    groups["v"] = value
    for key in ("k", "verb", "p"):
        if key in groups:
            groups[key] = re.sub(r"\s+", " ", groups[key]).lower()
    groups["k"] = groups.get("k", "").replace("favorite", "favourite").replace("mom", "mother").replace("mum", "mother")
    groups["n"] = groups.get("n", "")
    groups["a"] = groups.get("a", "").lower()
    text = template.format(**groups)
    text = text[0].upper() + text[1:]
    return Candidate(text=text, slot=None if slot is None else slot.format(**groups))


def _drop_contained(candidates: list[Candidate]) -> list[Candidate]:
    # "I live in Lisbon" found by two rules, or "I like tea" inside "I like tea and cake": keep the longer.
    kept: list[Candidate] = []
    for candidate in candidates:
        key = normalized(candidate.text)
        if any(key != normalized(other.text) and key in normalized(other.text) for other in candidates):
            continue
        if all(normalized(other.text) != key for other in kept):
            kept.append(candidate)
    return kept


def slot_of(text: str) -> str | None:
    """The slot an (already stored) fact fills, read with the same rules; None when none."""
    found = rule_candidates(text)
    return found[0].slot if len(found) == 1 else None
