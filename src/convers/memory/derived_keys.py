"""Derived search keys: the names and topics of a turn, written beside it so recall can gather by them.

A question such as "would she enjoy a hiking trip?" shares almost nothing with the turns that answer
it ("hauled my tent up to the ridge"): MiniLM puts the question's form ("would Maya ...?") ahead of
its topic. Both the question and the turns are close to a short topic description ("hiking,
camping, trails, mountains and the outdoors"), so each turn is tagged with the topics its vector is
near, and a question's topics bring in the tagged turns of the person asked about. Names and
places ("Porto", "Buenos Aires") are kept as entity keys, so a question naming one reaches every
turn that does.

Keys are derived without a model beyond the embedder: entities by capitalisation rules, topics by
cosine against the fixed list below (embedded once per store). Every key names the turn it came
from, and goes when that turn is forgotten.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from convers.memory.ranking import STOPWORDS, query_terms

# Everyday life topics of long conversations between two people (the subjects LoCoMo-like chats
# return to). Not drawn from the benchmark's pools: a list a person would write for any companion.
TOPICS: dict[str, str] = {
    "outdoors": "hiking, camping, trails, mountains and the outdoors",
    "animals": "pets, dogs, cats and caring for animals",
    "reading": "reading novels, books, book clubs and writing stories",
    "cooking": "cooking, baking, recipes and food",
    "environment": "the environment, recycling, climate and sustainability",
    "technology": "electronics, gadgets, coding and building technology",
    "instruments": "playing musical instruments and music lessons",
    "live music": "concerts, gigs, bands and live music",
    "travel": "travel, holidays, trips and visiting cities abroad",
    "children": "children, kids, parenting and family life",
    "languages": "learning foreign languages",
    "crafts": "crafts, making things by hand, woodwork and DIY",
    "sport": "sports, exercise, training and fitness",
    "health": "health, illness, injuries and doctors",
    "work": "work, jobs, careers and colleagues",
    "education": "school, studying, exams and education",
    "art": "painting, drawing, art and creativity",
    "films": "films, cinema, television and shows",
    "gardening": "gardening, plants and flowers",
    "relationships": "friends, relationships, dating and marriage",
    "money": "money, savings, bills and shopping",
    "home": "moving house, renting and home",
    "transport": "cars, driving and transport",
    "eating out": "restaurants and eating out",
    "volunteering": "volunteering, charity and community",
    "faith": "religion, faith and spirituality",
    "wellbeing": "mental health, stress, anxiety and therapy",
    "celebrations": "birthdays, parties and celebrations",
    "photography": "photography and taking pictures",
    "games": "video games and board games",
    "fashion": "fashion, clothes and style",
    "identity": "identity, LGBTQ, support groups and activism",
    "family planning": "adoption, pregnancy and having a baby",
}
# A turn carries its TURN_TOPICS nearest topics as keys when its text's cosine with the description
# is at least TURN_TOPIC_COSINE; a question looks for the QUERY_TOPICS topics it is QUERY_TOPIC_COSINE
# close to. Chosen on the tuning half of `convers bench memory` (recall@5): turns 0.1 / 1 topic 0.651,
# 0.15 / 1 0.648, 0.15 / 2 0.639; questions 0.4 against 0.35 (0.636) and 0.45 (0.634). At 0.1 most
# turns keep their nearest topic; a greeting far from every description keeps none.
TURN_TOPIC_COSINE = 0.1
TURN_TOPICS = 1
# A turn of fewer content words has no topic: "Talk soon!" is near some topic as it is near any, and
# the viewer would show it as "languages". Recall on the benchmark is the same with or without it.
MIN_TOPIC_WORDS = 3
QUERY_TOPIC_COSINE = 0.4
QUERY_TOPICS = 2
# A question's word shares a topic's description stem (its first MIN_STEM letters): that topic too.
QUERY_TOPIC_WORDS = True
MIN_STEM = 5
# Entity keys are cut to this many characters (a run of capitalised words in a shouted sentence).
MAX_ENTITY_CHARS = 60
_CAPITALISED = re.compile(r"\b[A-Z][\w'-]*(?:\s+(?:of\s+|de\s+|the\s+)?[A-Z][\w'-]*)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|[\"“(]\s*)$")
# Capitalised words that are not names: the pronoun, weekdays and months (dates are indexed apart).
_NOT_NAMES = frozenset(
    """i i'm i've i'd i'll ok okay monday tuesday wednesday thursday friday saturday sunday january february
    march april may june july august september october november december mr mrs ms dr""".split()
)


def stem(word: str) -> str:
    """A crude stem, the first MIN_STEM letters: 'environmental' and 'environment' meet, as do 'camping' and 'camp'."""
    return word.lower()[:MIN_STEM]


@functools.cache
def _description_stems(name: str) -> frozenset[str]:
    words = re.findall(r"[a-z]+", TOPICS.get(name, name).lower())
    return frozenset(stem(w) for w in words if len(w) >= MIN_STEM - 1 and w not in STOPWORDS)


@dataclass(frozen=True)
class DerivedKey:
    """One derived key and the turn it came from (what the memory viewer lists and forgets)."""

    kind: str  # "entity", "topic" or "observation" (contracts.memory.KEY_KINDS)
    key: str
    turn_id: str
    speaker: str
    text: str


def entities(text: str) -> list[str]:
    """Names, places and things in `text` by capitalisation, lower-cased and without duplicates.

    A capitalised word that starts a sentence counts only with the capitalised words after it
    ("Buenos Aires was..."), since any word is capitalised there; those words count alone too.
    """
    found: dict[str, None] = {}
    for match in _CAPITALISED.finditer(text):
        words = match.group(0).split()
        names = [words]
        if _SENTENCE_START.search(text[: match.start()]):
            # "Hey Maya", "Saw The Cartographer": the first word may be any word, so the rest counts too.
            names = [words, words[1:]] if len(words) > 1 else []
        for name_words in names:
            while name_words and name_words[0].lower().strip("'") in _NOT_NAMES | STOPWORDS:
                name_words = name_words[1:]
            name = " ".join(name_words).lower().removesuffix("'s")[:MAX_ENTITY_CHARS]
            if len(name) > 1 and name not in _NOT_NAMES:
                found.setdefault(name, None)
    return list(found)


def query_entities(words: list[str]) -> list[str]:
    """The word sequences of a question (one to three words) that may name an entity key."""
    return list(dict.fromkeys(" ".join(words[i: i + n]) for n in (1, 2, 3) for i in range(len(words) - n + 1)))


@dataclass
class TopicVectors:
    """The topic descriptions' vectors (made once by the store's embedder) and which topics a vector is near."""

    names: list[str] = field(default_factory=lambda: list(TOPICS))
    matrix: np.ndarray | None = None

    def ready(self) -> bool:
        return self.matrix is not None

    def of_turns(self, text_vectors: np.ndarray, texts: Sequence[str] | None = None) -> list[list[str]]:
        """Each row's topic keys: its TURN_TOPICS nearest topics that are TURN_TOPIC_COSINE close; none for
        a text (in `texts`, one per row) of under MIN_TOPIC_WORDS content words ("Talk soon!")."""
        if self.matrix is None or len(text_vectors) == 0 or text_vectors.shape[1] != self.matrix.shape[1]:
            return [[] for _ in range(len(text_vectors))]
        scores = np.asarray(text_vectors, dtype=np.float32) @ self.matrix.T
        best = np.argsort(-scores, axis=1)[:, :TURN_TOPICS]
        keys = [[self.names[j] for j in row_best if row[j] >= TURN_TOPIC_COSINE]
                for row, row_best in zip(scores, best, strict=True)]
        if texts is not None:
            keys = [k if len(query_terms(text)) >= MIN_TOPIC_WORDS else [] for k, text in zip(keys, texts, strict=True)]
        return keys

    def of_query(self, vector: np.ndarray, words: Iterable[str] = ()) -> list[str]:
        """The QUERY_TOPICS topics a question's (bare) vector is nearest, if QUERY_TOPIC_COSINE close,
        and those whose description shares a word stem with the question's content `words`.

        "Would Maya be up for a weekend of camping?" is nearer "would Maya ...?" than any topic: its
        form outweighs its subject in the vector, while its words name it.
        """
        if self.matrix is None or np.ravel(vector).shape[0] != self.matrix.shape[1]:
            return []
        scores = self.matrix @ np.ravel(vector).astype(np.float32)
        best = np.argsort(-scores)[:QUERY_TOPICS]
        found = dict.fromkeys(self.names[j] for j in best if scores[j] >= QUERY_TOPIC_COSINE)
        stems = {stem(w) for w in words if len(w) >= MIN_STEM}
        if stems and QUERY_TOPIC_WORDS:
            for name in self.names:
                if stems & _description_stems(name):
                    found.setdefault(name, None)
        return list(found)
