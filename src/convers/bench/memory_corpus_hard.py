"""The hard questions of the generated benchmark: several facts from different days, and inference.

Real conversations are where a companion is caught forgetting on two kinds of question that a
one-turn lookup cannot answer:
- `several-facts`: "what instruments does she play?" needs every turn that names one, said weeks
  apart, each in other words ("first lesson", "our band needs someone on", "practising at night").
  Both speakers may share a category, so the other person's items are distractors.
- `inference`: "would he enjoy a hiking trip?" is answered by turns that never say "hiking" (a tent
  on the ridge, boots worn out on the last trek). Each person has four traits out of six, so the
  other speaker's traits and same-topic small talk compete.
Both speakers get some categories and traits; which ones, the items, the templates and the sessions
are drawn from the conversation's seeded `random.Random`.

A time question is added on top of the travel category ("where did I travel in October?") when
the month names one trip only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

# (question templates, item pool, [(statement template, echoed question)]). Items are names and things;
# the statements say each in a different way so the question's words are not in them. The echoed
# question (`--echoed-words`, asked in the words of the question's first statement) reuses one of its
# words, never an item.
SEVERAL: dict[str, tuple[list[str], list[str], list[tuple[str, str]]]] = {
    "instruments": (
        ["What instruments {do} {X} play?", "Which instruments {has} {X} been learning to play?"],
        ["piano", "violin", "ukulele", "drums", "saxophone", "harmonica", "flute", "mandolin"],
        [("Had my first {item} lesson today, my fingertips are killing me.",
          "Which instruments {has} {X} been taking lessons on?"),
         ("Our little band was missing someone on {item}, so guess who volunteered.",
          "What instruments {do} {X} play, in the band or at home?"),
         ("I found a cheap {item} at the flea market and I can't put it down.",
          "What instruments {do} {X} play, like the one from the flea market?"),
         ("The neighbours must hate me, I practise the {item} late every night.",
          "Which instruments {do} {X} practise?")],
    ),
    "travel": (
        ["Which places {has} {X} visited?", "Where {has} {X} been on holiday?"],
        ["Prague", "Marrakesh", "Kyoto", "Cape Town", "Buenos Aires", "Dubrovnik", "Vancouver", "Tromso"],
        [("Just got back from {item}, I ate far too much.", "Where {has} {X} been and come back from?"),
         ("The photos from {item} finally came back from the printer.", "Which places {has} {X} got holiday photos from?"),
         ("{item} was freezing but I'd go back tomorrow.", "Which places {has} {X} visited, freezing ones included?"),
         ("We spent four days wandering around {item}, my feet are ruined.",
          "Which places {has} {X} spent days wandering around?")],
    ),
    "children": (
        ["What are the names of {Xs} kids?", "Who are {Xs} children?"],
        ["Ellie", "Finn", "Amara", "Theo", "Lola", "Sami", "Ruby", "Jonas"],
        [("My daughter {item} lost her first tooth at breakfast.", "What are the names of {Xs} sons and daughters?"),
         ("{item}, my youngest, came home with a gold star for spelling.",
          "What are the names of {Xs} kids, the youngest included?"),
         ("I took my son {item} to the dentist this morning, he was so brave.",
          "Who are {Xs} children, the one at the dentist included?"),
         ("{item} drew a portrait of me for the fridge, apparently I have green hair.",
          "Who are {Xs} children, the one who drew a portrait included?")],
    ),
    "languages": (
        ["Which languages {is} {X} studying?", "What languages {do} {X} speak?"],
        ["Spanish", "Japanese", "Portuguese", "Swahili", "Korean", "Italian", "Greek", "Arabic"],
        [("I can finally order food in {item} without panicking.",
          "Which languages {is} {X} studying, well enough to order food?"),
         ("My {item} tutor says my accent is getting better.", "Which languages {is} {X} studying, with a tutor or not?"),
         ("Forty days in a row on the {item} app, don't break my streak.",
          "Which languages {is} {X} studying, on the app or not?"),
         ("I dreamt in {item} last night, that has to be a good sign.",
          "Which languages {do} {X} speak well enough to dream in?")],
    ),
    "handmade": (
        ["What {has} {X} made by hand?", "Which things {has} {X} crafted themselves?"],
        ["a bookshelf", "a patchwork quilt", "a birdhouse", "a set of mugs", "a wooden stool", "a knitted scarf",
         "a cutting board", "a lampshade"],
        [("I finished building {item} this weekend, it only wobbles a little.",
          "What {has} {X} finished building by hand?"),
         ("Spent all Sunday on {item}, my hands are covered in glue.", "What {has} {X} made with glue and bare hands?"),
         ("Gave my mum {item} I put together myself, she actually cried.", "What {has} {X} put together by hand?"),
         ("{item} is finally done, took me three evenings in the shed.", "What {has} {X} made by hand in the shed?")],
    ),
    "concerts": (
        ["Which bands {has} {X} seen live?", "What gigs {has} {X} gone to?"],
        ["The Velvet Foxes", "Marrow Lane", "Kite Parade", "Nova Choir", "The Tin Sailors", "Pale Harbour",
         "Static Orchard", "The Lemon Arcade"],
        [("{item} played for three hours last night, my ears are still ringing.",
          "Which bands {has} {X} seen live, loud enough to leave {Xs} ears ringing?"),
         ("Managed to get front-row tickets for {item}, what a night.", "Which bands {has} {X} had tickets to see?"),
         ("Saw {item} at the old theatre, the crowd sang every word.",
          "Which bands {has} {X} seen live, at the theatre or elsewhere?"),
         ("I queued for ages to get into {item}'s show but it was worth it.", "Which bands' shows {has} {X} queued for?")],
    ),
}
# The travel time question in the words of its statement (`--echoed-words`).
TRAVEL_WHEN = {
    "Just got back from {item}, I ate far too much.": "Where did {X} get back from in {when}?",
    "The photos from {item} finally came back from the printer.": "Where did {X} take the holiday photos in {when}?",
    "{item} was freezing but I'd go back tomorrow.": "Where did {X} go in {when} that was freezing?",
    "We spent four days wandering around {item}, my feet are ruined.": "Where did {X} go wandering around in {when}?",
}
# (questions, [(supporting statement, echoed question)]): none of the question's content words is in its
# statements; the echoed question (asked in the words of the first statement) reuses one.
INFERENCE: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
    "outdoors": (
        ["Would {X} likely enjoy a hiking trip?", "Would {X} be up for a weekend of camping?"],
        [("Hauled my tent up to the ridge on Saturday, woke up above the clouds.",
          "Would {X} likely enjoy a hiking trip up to a ridge?"),
         ("Nothing clears my head like a long trail with a view at the top.", "Would {X} enjoy a long trail hike?"),
         ("My boots finally fell apart after the last trek, time for new ones.", "Would {X} be up for a weekend trek?"),
         ("We slept under the stars by the lake, no signal at all, bliss.", "Would {X} enjoy camping by a lake?")],
    ),
    "animals": (
        ["Would {X} be happy to look after a dog for a week?", "Would {X} want to foster a puppy?"],
        [("I volunteer at the shelter on Sundays now, walking the old hounds.",
          "Would {X} be happy to look after a shelter dog for a week?"),
         ("I can't pass a cat on the street without stopping to say hello.",
          "Would {X} be happy to look after a cat for a week?"),
         ("Honestly I'd fill the house with rescues if there was space.", "Would {X} want to foster a rescue puppy?"),
         ("Spent my lunch break watching videos of baby goats again.", "Would {X} enjoy a day at a farm with baby goats?")],
    ),
    "reading": (
        ["Would {X} enjoy going to a literary festival?", "Is {X} the kind of person who'd like a library tour?"],
        [("I got through four novels on the beach, couldn't put them down.",
          "Would {X} enjoy a festival about novels?"),
         ("My book club argued about the ending for two hours straight.", "Would {X} enjoy going to a book festival?"),
         ("The second-hand shop owner knows me by name now, I'm there every week.",
          "Would {X} like a tour of second-hand bookshops?"),
         ("I've started writing short stories in the evenings, just for myself.",
          "Would {X} enjoy a festival of short fiction?")],
    ),
    "cooking": (
        ["Would {X} be interested in a cooking class?", "Would a chef's workshop appeal to {Xo}?"],
        [("My sourdough starter is finally bubbling, I've even named it.",
          "Would {X} be interested in a sourdough baking class?"),
         ("I spent the afternoon at the spice market sniffing everything.", "Would {X} enjoy a cooking class on spices?"),
         ("Tried making fresh pasta from scratch, there's flour on the ceiling.",
          "Would {X} be interested in a fresh pasta class?"),
         ("I've been copying the knife skills from those TV cooks all week.",
          "Would a class on knife skills appeal to {Xo}?")],
    ),
    "environment": (
        ["Would {X} sign an environmental petition?", "Does {X} care about climate issues?"],
        [("We picked up three bags of litter along the river this morning.",
          "Would {X} sign a petition against litter in the river?"),
         ("I sold the car, I cycle everywhere now to cut my emissions.",
          "Would {X} sign a petition to cut emissions?"),
         ("Our compost heap is thriving, barely anything goes in the bin.",
          "Would {X} sign a petition for compost bins?"),
         ("I only buy second-hand clothes now, fast fashion is so wasteful.",
          "Does {X} care about fast fashion and the climate?")],
    ),
    "gadgets": (
        ["Would {X} enjoy a robotics workshop?", "Would {X} like an electronics kit as a present?"],
        [("I built a little weather station with a circuit board and some sensors.",
          "Would {X} enjoy a workshop on circuit boards?"),
         ("Spent the night soldering wires for my home-made game controller.",
          "Would {X} like a soldering kit as a present?"),
         ("I taught myself to code a tiny app that waters my plants.", "Would {X} like to code robots in a workshop?"),
         ("Took apart the old radio to see how it works, only two screws left over.",
          "Would {X} enjoy taking apart electronics in a workshop?")],
    ),
}


@dataclass(frozen=True)
class HardBeat:
    """One statement to lay out: who says it, in which session, and the tag its turn id is kept under."""

    who: str
    session: int
    text: str
    tag: str


@dataclass(frozen=True)
class HardQuestion:
    """A question whose evidence is the turns tagged `tags`; `asked` None means after the last session."""

    kind: str
    template: str
    tags: tuple[str, ...]
    slots: tuple[tuple[str, str], ...] = ()
    asked: datetime | None = None
    echoed: str = ""  # the question in its first statement's words (`--echoed-words`)


def _tidy_item(text: str) -> str:
    return text[:1].upper() + text[1:]


def plan_hard(rng: random.Random, who: str, sessions: int, days: list[datetime], extra_evidence: dict[str, str],
              taken: dict[str, set[str]]) -> tuple[list[HardBeat], list[HardQuestion]]:
    """One speaker's several-facts and inference beats and questions.

    `extra_evidence` maps a category to a tag said elsewhere that also answers it (the instrument
    picked up again in the one-fact turns), so the evidence is every turn that holds an item.
    Items in `taken` (the other speaker's) are not drawn: two people's kids do not share names.
    """
    beats: list[HardBeat] = []
    questions: list[HardQuestion] = []
    for category in rng.sample(sorted(SEVERAL), 4):
        asks, pool, templates = SEVERAL[category]
        count = rng.randint(2, 4)
        items = rng.sample([i for i in pool if i not in taken.setdefault(category, set())], count)
        taken[category].update(items)
        chosen_sessions = sorted(rng.sample(range(sessions), count))
        phrasings = rng.sample(templates, count)
        tags = []
        for n, (item, session, (template, _)) in enumerate(zip(items, chosen_sessions, phrasings, strict=True)):
            tag = f"{who}-several-{category}-{n}"
            beats.append(HardBeat(who, session, _tidy_item(template.format(item=item)), tag))
            tags.append(tag)
        if category in extra_evidence:
            tags.append(extra_evidence[category])
        questions.append(HardQuestion("several-facts", rng.choice(asks), tuple(tags), echoed=phrasings[0][1]))
        if category == "travel":
            months = [days[s].strftime("%B") for s in chosen_sessions]
            unique = [n for n, m in enumerate(months) if months.count(m) == 1 and chosen_sessions[n] < sessions - 1]
            if unique:
                n = rng.choice(unique)
                questions.append(HardQuestion("temporal", "Where did {X} travel to in {when}?", (tags[n],),
                                              (("when", months[n]),), echoed=TRAVEL_WHEN[phrasings[n][0]]))
    for trait in rng.sample(sorted(INFERENCE), 4):
        asks, statements = INFERENCE[trait]
        count = rng.randint(2, 3)
        chosen_sessions = sorted(rng.sample(range(sessions), count))
        tags = []
        drawn = rng.sample(statements, count)
        for n, ((text, _), session) in enumerate(zip(drawn, chosen_sessions, strict=True)):
            tag = f"{who}-infer-{trait}-{n}"
            beats.append(HardBeat(who, session, text, tag))
            tags.append(tag)
        questions.append(HardQuestion("inference", rng.choice(asks), tuple(tags), echoed=drawn[0][1]))
    return beats, questions
