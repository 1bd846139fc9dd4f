"""`convers bench memory --long-turns`: the generated conversations with turns of several sentences.

The generated turns say one thing each ("We finally brought home a little beagle from the shelter").
Real people chatting over many sessions say several: a reaction to what they just heard, the news,
an aside, a question back ("Aw, that's lovely! We finally brought home a little beagle from the
shelter. It's been a hectic week. How about you?"). One mean-pooled vector of such a turn is
diluted by the rest, and a turn ending in a question is not a question. This variant wraps every
turn, evidence or not, in such sentences, drawn with one seeded `random.Random` from small pools of
bland small talk that names no pet, job, food, place or pastime a question asks about. The
questions and their evidence ids are unchanged.
"""

from __future__ import annotations

import random
from dataclasses import replace

from convers.bench.memory_corpus import BenchConversation

REACTIONS = ["Oh wow, that's great to hear!", "Haha, I totally get that.", "Aw, that's lovely.",
             "Honestly, same here.", "No way, really?", "That sounds like a lot.", "Thanks for asking!",
             "Ugh, I know the feeling.", "Ah, good timing.", "Right, I remember you saying that."]
ASIDES = ["It's been a hectic week, I've barely had a moment to myself.",
          "The weather here has been grey and rainy for days.",
          "I've been trying to get to bed earlier, with mixed results.",
          "Traffic on the way home was terrible again today.",
          "I finally caught up on all my messages this morning.",
          "Everything feels like it's happening at once lately.",
          "I'm a bit tired today, so bear with me.",
          "It's been one of those days where nothing goes to plan."]
FOLLOW_UPS = ["How about you?", "What have you been up to?", "How's everything on your end?",
              "Anyway, how are you doing?", "Did you have a good weekend?", "What do you think?"]
# How often a turn gets each: a reaction before it, an aside after it, a question back at the end.
REACTION_SHARE = 0.5
ASIDE_SHARE = 0.4
FOLLOW_UP_SHARE = 0.4


def lengthen(conversation: BenchConversation, seed: int) -> BenchConversation:
    """The conversation with each turn wrapped in small talk (same ids, times, questions)."""
    rng = random.Random(f"{seed}-{conversation.name}-long")
    turns = []
    for turn in conversation.turns:
        before = [rng.choice(REACTIONS)] if rng.random() < REACTION_SHARE else []
        after = [rng.choice(ASIDES)] if rng.random() < ASIDE_SHARE else []
        if rng.random() < FOLLOW_UP_SHARE and not turn.text.rstrip().endswith("?"):
            after.append(rng.choice(FOLLOW_UPS))
        turns.append(replace(turn, text=" ".join([*before, turn.text, *after])))
    return replace(conversation, turns=turns)
