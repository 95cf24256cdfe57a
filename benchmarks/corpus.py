"""Synthetic but realistic benchmark data: personal-memory sentences and queries, and vector sets.

Embedding 100K texts with the bundled model would take minutes on 2 cores, so the large sets are
made from a few thousand real embeddings: each vector is a real memory embedding mixed with a second
one and with isotropic noise, then normalized. That keeps what matters to an index (real
embeddings' clustered neighbourhoods, cosine scores in the range real queries see) at any size.
Pure random unit vectors would not: in 384 dimensions they have no neighbourhood structure (every
vector is nearly orthogonal to every other), which is the worst case for any graph index and
nothing like sentence embeddings.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

PEOPLE = [
    "my sister Anna",
    "my brother Tom",
    "my mother",
    "my father",
    "my friend Priya",
    "my colleague Marco",
    "my manager Lena",
    "the dentist",
    "the landlord",
    "my neighbour Mr Okafor",
    "my daughter Mia",
    "my son Leo",
    "my partner Sam",
    "grandma Rose",
    "my doctor",
    "the plumber",
    "my coach Jordan",
    "my flatmate Chen",
    "aunt Beatriz",
    "my accountant",
    "the vet",
    "my piano teacher",
    "cousin Yusuf",
]
THINGS = [
    "oat milk",
    "dark chocolate",
    "jazz records",
    "hiking boots",
    "the blue car",
    "sourdough bread",
    "the garden shed",
    "a vintage camera",
    "green tea",
    "the kitchen tap",
    "running shoes",
    "the wifi router",
    "spicy ramen",
    "old photo albums",
    "the bike lock",
    "a sailing trip",
    "chess puzzles",
    "the tax return",
    "peanut butter",
    "the winter coat",
    "a yoga mat",
    "the passport",
    "tomato seedlings",
    "board games",
]
PLACES = [
    "Lisbon",
    "the office",
    "the gym",
    "Kyoto",
    "the farmers market",
    "the library",
    "Berlin",
    "the lake house",
    "the airport",
    "downtown",
    "the clinic",
    "the school",
    "Montreal",
    "the beach",
    "the train station",
]
TIMES = [
    "on Tuesday",
    "next week",
    "every morning",
    "in March",
    "at 3pm",
    "on weekends",
    "tomorrow",
    "last summer",
    "before Christmas",
    "on the 14th",
    "after work",
    "in the evening",
    "twice a month",
    "by Friday",
]
TEMPLATES = [
    "{person} loves {thing}.",
    "Remember that {person} is allergic to {thing}.",
    "I promised {person} to bring {thing} {time}.",
    "{person} lives near {place} and visits {time}.",
    "Meeting with {person} at {place} {time}.",
    "I left {thing} at {place}.",
    "Buy {thing} for {person} {time}.",
    "{person} recommended a restaurant in {place}.",
    "The appointment with {person} is {time} at {place}.",
    "Fix {thing} {time}; {person} said it is urgent.",
    "{person} gave me {thing} as a birthday present.",
    "Flight to {place} {time}, do not forget {thing}.",
    "My password hint for {place} mentions {thing}.",
    "{person} owes me money for {thing}.",
    "Idea: write a blog post about {thing} and {place}.",
    "I feel happiest {time} at {place}.",
]
QUESTIONS = [
    "What does {person} like?",
    "When is my appointment with {person}?",
    "Where did I leave {thing}?",
    "What should I bring {time}?",
    "Who lives near {place}?",
    "What did {person} give me?",
    "Anything about {thing}?",
    "What am I doing in {place}?",
]


def _fill(template: str, rng: random.Random) -> str:
    text = template.format(
        person=rng.choice(PEOPLE), thing=rng.choice(THINGS), place=rng.choice(PLACES), time=rng.choice(TIMES)
    )
    return text[0].upper() + text[1:]


def memory_texts(count: int, *, seed: int = 7) -> list[str]:
    """`count` distinct memory-like sentences, the same for the same seed."""
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    while len(texts) < count:
        texts[_fill(rng.choice(TEMPLATES), rng)] = None
    return list(texts)


def query_texts(count: int, *, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [_fill(rng.choice(QUESTIONS), rng) for _ in range(count)]


def unit_rows(matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.clip(norms, 1e-12, None), dtype=np.float32)


def mixed_vectors(
    base: npt.NDArray[np.float32], count: int, *, seed: int = 3, noise: float = 0.6
) -> npt.NDArray[np.float32]:
    """`count` unit vectors around real embeddings: base[i] + a * base[j] + noise * g, normalized
    (a uniform in [0, 0.5], g a random unit vector)."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, base.shape[0], count)
    second = rng.integers(0, base.shape[0], count)
    weight = rng.uniform(0.0, 0.5, (count, 1)).astype(np.float32)
    gaussian = unit_rows(rng.standard_normal((count, base.shape[1])).astype(np.float32))
    return unit_rows(base[first] + weight * base[second] + np.float32(noise) * gaussian)


def random_unit_vectors(count: int, dimensions: int, *, seed: int = 5) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return unit_rows(rng.standard_normal((count, dimensions)).astype(np.float32))


def embed_all(
    embed: Callable[[Sequence[str]], npt.NDArray[np.float32]], texts: Sequence[str]
) -> npt.NDArray[np.float32]:
    return np.vstack([embed(texts[start : start + 256]) for start in range(0, len(texts), 256)])
