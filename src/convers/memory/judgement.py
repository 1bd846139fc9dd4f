"""Questions that ask for a judgement about a person ("would Maya enjoy a hiking trip?"), and their vector.

Such a question names an activity the person may never have mentioned; what answers it are their
turns about the wider interest ("hauled my tent up to the ridge", "my boots fell apart after the
last trek"). MiniLM puts the question's frame ("would Maya ...?") ahead of its subject, so the
question's vector is moved towards the topic description it is nearest ("hiking, camping, trails,
mountains and the outdoors", derived_keys.TOPICS), which is closer to those turns than the
question is. Only for these questions: for every question it cost recall (below).
"""

from __future__ import annotations

import re

import numpy as np

from convers.memory.derived_keys import TopicVectors

# "would Maya enjoy ...", "would a chef's workshop appeal to Leo", "is Maya the kind of person who'd
# ...", "is he likely to ...", "does she care about ...", "do I care about ..."; not "would you ...",
# which asks something of the companion.
_JUDGEMENT = re.compile(
    r"^\s*(?:would|wouldn't)\s+(?!you\b)"
    r"|^\s*(?:is|are|am)\s+[\w' ]{1,40}?\s+(?:the\s+(?:kind|type|sort)\s+of|likely|probably|into)\b"
    r"|^\s*(?:does|do)\s+[\w' ]{1,40}?\s+(?:care|probably|enjoy|like)\b",
    re.IGNORECASE,
)


def is_judgement(question: str) -> bool:
    """Whether `question` asks whether a person would like, enjoy or care about something."""
    return _JUDGEMENT.search(question) is not None


def towards_topic(vector: np.ndarray, topics: TopicVectors, weight: float) -> np.ndarray:
    """`vector` plus `weight` x the vector of its nearest topic description, unit length (a new array);
    `vector` itself when there are no topic vectors (or they are of another width) or `weight` is 0."""
    flat = np.ravel(vector).astype(np.float32)
    if weight <= 0 or topics.matrix is None or topics.matrix.shape[1] != flat.shape[0]:
        return vector
    nearest = topics.matrix[int(np.argmax(topics.matrix @ flat))]
    moved = flat + weight * nearest
    norm = float(np.linalg.norm(moved))
    return vector if norm == 0 else (moved / norm).astype(np.float32)
