"""A generated, realistic recall benchmark: long multi-session conversations between two named people.

Each conversation is between the user (role "user") and a friend (role "assistant", named), over 20
evening sessions a few days apart in one local time zone. Both speakers have a life drawn from
fixed pools with one seeded `random.Random`: a pet, a job, a sibling in another city, a hobby,
an allergy, an injury, plans that change later, a dinner every session and a film every month.
Distractors are built in: both speakers have facts of every kind (two pets, two jobs, two trips),
neighbours' animals and cousins' trips come up, and the superseded version of every changed plan
stays in the store.

Questions carry their evidence turn ids and a type:
- `single-hop`: one turn holds the answer; asked in other words than the turn uses.
- `multi-hop`: two turns are needed (the sister in Porto, and later who she is marrying).
- `temporal`: "when did ..." about a one-off event, or a recurring topic narrowed by a time
  expression ("yesterday", "three days ago", "two weeks ago", "last week", "in March", "last May").
- `open-domain`: a preference to infer from ("what kind of concert would Maya enjoy?").
- `changed-plan`: the plan changed; the evidence is the latest statement only.

Every question also has an echoed wording in its evidence's words, never naming the slot value it
asks for ("What did I bring home from the shelter?"); `echoed_words` asks that share of questions in
it (`convers bench memory --echoed-words`), as people reuse their words on real long conversations.

Questions about the user are in the first person ("What did I cook two weeks ago?"), as the user asks
the agent; questions about the friend name them. Everything is generated from templates, so the
same seed gives the same corpus byte for byte, and nothing comes from a public benchmark.

Over 400 lines because most of it is data: the pools of lives, places and plans and the question
templates, which read best beside the code that draws from them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from convers.bench.memory_corpus_hard import plan_hard
from convers.contracts.memory import MemoryTurn

QUESTION_TYPES = ("single-hop", "multi-hop", "temporal", "open-domain", "changed-plan", "several-facts", "inference")

USERS = "Sam Alex Jordan Priya Tomas Mei Kwame Laura Ivan Zoe".split()
FRIENDS = "Maya Leo Nadia Ravi Greta Omar Ines Hugo Selma Bruno".split()
ZONES = ["America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles", "Australia/Sydney",
         "Europe/London", "America/Sao_Paulo", "Asia/Kolkata", "America/Chicago", "Europe/Madrid"]
RELATIVES = ["sister", "brother", "cousin"]
KIN = """Lena Ben Chloe Marco Aisha Felix Yuki Rosa Dev Ilse Nina Pablo Tess Arjun Sofia Karl Hana Luis Vera
Otto""".split()
COWORKERS = "Dana Kenji Fiona Raul Petra Simon Amir Joy Gus Mira Theo Lucia".split()
TEACHERS = "Mrs Okafor|Mr Lindqvist|Ms Haddad|Mr Brennan|Mrs Castillo|Ms Novak|Mr Adeyemi|Ms Varga".split("|")
SPECIES = ["beagle", "tabby kitten", "greyhound", "rabbit", "parrot", "tortoise", "ferret", "border collie"]
PETS = "Biscuit Pepper Mochi Waffles Juniper Nacho Pickle Olive Rocket Truffle Clementine Noodle".split()
CITIES = """Lisbon Porto Osaka Montreal Nairobi Tallinn Valparaiso Hanoi Krakow Edinburgh Auckland Quito Bergen
Seville Tbilisi Halifax""".split()
WORKPLACES = ["the city hospital", "a small architecture studio", "the airport", "a primary school",
              "a law firm downtown", "the county library", "a bike repair shop", "the science museum"]
JOBS = ["night nurse", "junior architect", "air traffic controller", "maths teacher", "paralegal",
        "archivist", "mechanic", "exhibit designer"]
HOBBIES = ["pottery", "watercolour", "salsa", "woodcarving", "bouldering", "ceramics glazing", "stand-up comedy",
           "beekeeping"]
FOODS = ["peanuts", "shellfish", "sesame", "kiwi", "mustard", "hazelnuts"]
CARS = ["Volvo estate", "Fiat Panda", "Toyota pickup", "Mini Cooper", "Skoda Octavia", "Honda Jazz"]
BONES = ["wrist", "collarbone", "ankle", "elbow", "little finger"]
BOOKS = ["The Salt Road", "A Winter in Tangier", "The Glass Orchard", "Nine Bridges", "The Lighthouse Keeper's Son",
         "Paper Moons", "The Quiet Engine", "North of Nowhere"]
INSTRUMENTS = ["cello", "trumpet", "banjo", "clarinet", "accordion", "bass guitar"]
DISTRICTS = ["Riverside", "Old Town", "the Docklands", "Hillcrest", "Northgate", "Willow Park", "the Arts Quarter"]
FIANCES = "Jonah Priscilla Mateo Keira Elliot Ramona Tobias Anouk".split()
GENRES = [("jazz", "Coltrane"), ("bluegrass", "Alison Krauss"), ("techno", "Jeff Mills"), ("opera", "Puccini"),
          ("reggae", "Toots"), ("punk", "the Clash"), ("soul", "Aretha")]
CUISINES = [("ramen", "Japanese"), ("dosa", "South Indian"), ("pierogi", "Polish"), ("tacos al pastor", "Mexican"),
            ("injera", "Ethiopian"), ("pho", "Vietnamese"), ("paella", "Spanish")]
LANDSCAPES = ["mountains", "forest", "desert", "fjords", "highlands"]
GADGETS = ["record player", "espresso machine", "e-reader", "drone", "telescope", "sewing machine"]
TEAS = ["mint", "jasmine", "rooibos", "chamomile", "earl grey", "ginger"]
DESTINATIONS = ["Rome", "Iceland", "Crete", "Morocco", "Vienna", "Bali", "Sicily", "Norway", "Peru", "Croatia"]
VENTURES = ["bakery", "food truck", "bookshop", "plant nursery", "surf school"]
CAREERS = ["paramedic", "software tester", "midwife", "electrician", "sign language interpreter"]
SPORTS = ["rugby", "squash", "rowing", "fencing", "judo", "water polo", "handball"]
DISHES = """lentil soup|mushroom risotto|chicken curry|shakshuka|beef stew|pad thai|veggie lasagne|fish tacos|
gnocchi with pesto|chili con carne|stuffed peppers|ramen from scratch|a spinach quiche|pumpkin soup|lamb kofta|
fried rice|bean burritos|a tuna bake|cauliflower cheese|dumplings|moussaka|a leek pie|jambalaya|falafel wraps|
goulash|paella|miso salmon|a chickpea stew|carbonara|butter chicken|a tomato tart|pierogi|bibimbap|a pea risotto|
enchiladas|a cottage pie|tom yum|a frittata|bolognese|katsu curry|halloumi skewers|a sweet potato curry""".replace(
    "\n", "").split("|")
FILMS = ["Harbour Lights", "The Last Orchard", "Midnight in Lagos", "Copper Sky", "The Ninth Wave", "Small Hours",
         "Dust and Thunder", "The Paper Crown", "Blue Vertigo", "A Long Way Down", "Silent Tide", "The Understudy",
         "Ghost Frequency", "Wild Geese", "The Cartographer"]
# (statement, question, the question in the statement's words for --echoed-words).
EVENTS = [
    ("I ran my first half marathon this morning, my legs feel like jelly.", "When did {X} do the long-distance race?",
     "When did {X} run a half marathon?"),
    ("I finally passed my driving test today, third attempt!", "When did {X} get a licence to drive?",
     "When did {X} pass the driving test?"),
    ("We painted the whole living room a dark green this weekend.", "When did {X} redecorate the lounge?",
     "When did {X} paint the living room?"),
    ("I gave my first talk at a conference this afternoon, my hands were shaking.",
     "When did {X} present at an industry event?", "When did {X} give a talk at a conference?"),
    ("We planted an apple tree in the back garden today.", "When did {X} put a sapling in the yard?",
     "When did {X} plant the apple tree?"),
    ("I got my hair cut really short yesterday, it feels so light.", "When did {X} change hairstyle?",
     "When did {X} get a really short haircut?"),
]
REACTIONS = ["Oh nice!", "No way, really?", "That's wonderful.", "Oh no, that sounds rough.", "Ha, classic.",
             "Good for you.", "I had no idea.", "Tell me everything.", "Wow.", "That's so you.", "Honestly, fair.",
             "Sounds like a lot.", "Oh, I love that."]
CHATTER = [
    ("How was your week?", "Long, but okay. Lots of emails."),
    ("Did you sleep at all last night?", "Barely, the neighbours had a party."),
    ("Is it still raining over there?", "Nonstop since Tuesday."),
    ("Have you been out much?", "Not really, I've been hibernating."),
    ("Are you watching anything good?", "Just rewatching an old sitcom, nothing new."),
    ("How's the commute these days?", "The bus is always late, I might start walking."),
    ("Did you get the parcel I sent?", "Yes! Thank you, it arrived on Friday."),
    ("Any plans for the weekend?", "Nothing much, maybe a long walk."),
    ("Are you feeling better?", "Mostly, just a bit of a cough left."),
    ("Did you call your mum back?", "I did, we talked for an hour."),
]
# Same topics as the facts, about someone else: they must not be taken for the evidence.
DISTRACTORS = [
    "My neighbour's {species} howled all night again, I barely slept.",
    "A coworker of mine just adopted a {species} too, everyone is getting pets.",
    "My cousin keeps talking about a trip to {dest} next year.",
    "I read a bad review of {book}, so I might skip it.",
    "There's a {job} living upstairs, she works strange hours.",
    "A friend broke her {bone} skiing last winter, it took months to heal.",
    "Someone at the gym was raving about {hobby} classes.",
    "The {cuisine} place near the station closed down, sadly.",
    "I saw an advert for a {car}, they look so expensive now.",
    "My uncle used to play the {instrument}, badly.",
    "I walked through {district} on Sunday, it's changed a lot.",
    "A colleague's brother lives in {city}, apparently it's lovely.",
]
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}

# 30 sessions of 24 turns: ~360 turns per person, the size of a LoCoMo-like conversation.
SESSIONS = 30
SESSION_TURNS = 24


@dataclass(frozen=True)
class CorpusShape:
    """How long a conversation is and whether it has the hard questions (memory_corpus_hard.py).

    `bench memory` uses the default; the returning person of `bench latency` keeps the earlier
    shape (20 sessions of 18 turns, no hard questions), so its timings stay comparable.
    """

    sessions: int = SESSIONS
    session_turns: int = SESSION_TURNS
    hard: bool = True


EARLIER_SHAPE = CorpusShape(20, 18, hard=False)


@dataclass(frozen=True)
class BenchQuestion:
    """A question with the turn ids that hold its answer, its type and when it is asked."""

    id: str
    conversation: str
    text: str
    kind: str
    evidence: tuple[str, ...]
    asked_at: datetime


@dataclass
class BenchConversation:
    """One long conversation: its turns oldest first, its questions and its local time zone."""

    name: str
    user: str
    friend: str
    zone: str
    turns: list[MemoryTurn] = field(default_factory=list)
    questions: list[BenchQuestion] = field(default_factory=list)


@dataclass
class _Line:
    who: str  # "user" or "friend"
    text: str
    tag: str | None = None


@dataclass
class _Plan:
    """What one conversation will contain before it is laid out in sessions."""

    beats: dict[int, list[list[_Line]]] = field(default_factory=dict)
    # (type, question, evidence tags, when asked or None, the question in its evidence's words)
    questions: list[tuple[str, str, tuple[str, ...], object, str]] = field(default_factory=list)

    def beat(self, session: int, lines: list[_Line]) -> None:
        self.beats.setdefault(session, []).append(lines)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _tidy(text: str) -> str:
    """Capital first letter, 'an' before a vowel: slot values are filled into fixed sentences."""
    text = re.sub(r"\b([Aa]) (?=[aeiou])", lambda m: m.group(1) + "n ", text)
    return text[:1].upper() + text[1:]


def _subject(who: str, names: dict[str, str]) -> dict[str, str]:
    """Words for the question's subject: first person for the user, the name for the friend."""
    if who == "user":
        return {"X": "I", "Xs": "my", "Xo": "me", "do": "do", "is": "am", "has": "have"}
    name = names[who]
    return {"X": name, "Xs": f"{name}'s", "Xo": name, "do": "does", "is": "is", "has": "has"}


def _ask(template: str, who: str, names: dict[str, str], **slots: str) -> str:
    text = template.format(**_subject(who, names), **slots)
    # "When did I ..." reads right; "What does I ..." does not.
    return text.replace("does I ", "do I ").replace("is I ", "am I ").replace("has I ", "have I ").replace("Does I ", "Do I ")


def _life(rng: random.Random, taken: dict[str, set[str]]) -> dict[str, str]:
    """One speaker's facts, distinct from the other speaker's where a pool allows."""

    def pick(key: str, pool: list[str]) -> str:
        free = [v for v in pool if v not in taken.setdefault(key, set())] or pool
        value = rng.choice(free)
        taken[key].add(value)
        return value

    genre, artist = rng.choice([g for g in GENRES if g[0] not in taken.setdefault("genre", set())])
    taken["genre"].add(genre)
    dish, cuisine = rng.choice([c for c in CUISINES if c[1] not in taken.setdefault("cuisine", set())])
    taken["cuisine"].add(cuisine)
    dest_a = pick("dest", DESTINATIONS)
    dest_b = pick("dest", DESTINATIONS)
    sport_a = pick("sport", SPORTS)
    sport_b = pick("sport", SPORTS)
    return {
        "species": pick("species", SPECIES), "pet": pick("pet", PETS), "rel": rng.choice(RELATIVES),
        "sib": pick("kin", KIN), "city": pick("city", CITIES), "city2": pick("city", CITIES),
        "workplace": pick("workplace", WORKPLACES), "job": pick("job", JOBS), "hobby": pick("hobby", HOBBIES),
        "food": pick("food", FOODS), "car": pick("car", CARS), "col": pick("col", COWORKERS),
        "bone": pick("bone", BONES), "book": pick("book", BOOKS), "instrument": pick("instrument", INSTRUMENTS),
        "district": pick("district", DISTRICTS), "fiance": pick("fiance", FIANCES),
        "teacher": pick("teacher", TEACHERS), "genre": genre, "artist": artist, "dish": dish, "cuisine": cuisine,
        "landscape": pick("landscape", LANDSCAPES), "gadget": pick("gadget", GADGETS), "tea": pick("tea", TEAS),
        "dest_a": dest_a, "dest_b": dest_b, "trip_month": rng.choice(["June", "July", "August", "September"]),
        "venture": pick("venture", VENTURES), "career": pick("career", CAREERS), "sport_a": sport_a,
        "sport_b": sport_b, "d1": _ordinal(rng.randint(10, 14)), "d2": _ordinal(rng.randint(20, 26)),
        "month": rng.choice(["January", "February", "April", "October", "November"]), "day": str(rng.randint(2, 28)),
        "age": str(rng.randint(26, 44)),
    }


# (prompt by the other speaker or None, statement, [(question, echoed question)]) for one-turn facts. The
# echoed question (`--echoed-words`) reuses a word of the statement, as people ask in their own words,
# but never the slot value it asks for.
SINGLE = [
    ("Anything new at home?", "We finally brought home a little {species} from the shelter, we're calling him {pet}.",
     [("What sort of animal did {X} adopt?", "What did {X} bring home from the shelter?"),
      ("What did {X} name the new companion?", "What did {X} name the pet from the shelter?")]),
    ("Any news on the work front?", "{workplace} hired me, I start there as a {job} on Monday.",
     [("What is {Xs} new occupation?", "What job was {X} hired for?")]),
    (None, "My {rel} {sib} packed up and relocated to {city} last weekend.",
     [("Where is {sib} staying these days?", "Where has {sib} relocated to?")]),
    ("What are you doing with your Thursdays now?", "I signed up for a {hobby} course at the community centre.",
     [("What pastime {has} {X} taken up recently?", "What course {has} {X} signed up for?")]),
    (None, "I can't touch {food}, my throat swells up every time.",
     [("Is there an ingredient {X} must avoid?", "What makes {Xs} throat swell up?")]),
    ("How are you getting around?", "The old hatchback finally died, so I bought a second-hand {car}.",
     [("What vehicle {do} {X} drive now?", "What did {X} buy when the old hatchback died?")]),
    (None, "{col} from my team keeps pinching my lunch from the office fridge.",
     [("Who has been taking {Xs} food at work?", "Who keeps pinching {Xs} lunch?")]),
    ("Why the bandage?", "I came off my bike on the way home and fractured my {bone}.",
     [("What did {X} break in the cycling accident?", "What did {X} fracture in the bike accident?")]),
    (None, "I stayed up until two finishing {book}, what an ending.",
     [("Which novel {has} {X} just read?", "Which book did {X} stay up late finishing?")]),
    (None, "I turn {age} on {month} {day}, I want something low-key.",
     [("When is {Xs} birthday?", "When {do} {X} turn {age}?")]),
    ("What's that noise in the background?", "I dug my old {instrument} out of the attic, I'm practising scales every night.",
     [("What instrument {has} {X} picked up again?", "Which instrument did {X} dig out of the attic?")]),
    ("Did the flat hunt work out?", "We got the keys to a place in {district}, right by the canal.",
     [("Which part of town {is} {X} living in now?", "Where is {Xs} new place by the canal?")]),
]
# (first statement's SINGLE index, later statement, question, echoed question): both turns are evidence.
MULTI = [
    (2, "Huge news, {sib} and {fiance} are getting married next summer!",
     "Who is {Xs} {rel} in {city} going to wed?", "Who is {Xs} {rel} in {city} getting married to?"),
    (0, "{pet} chewed through the sofa cushions again, there's stuffing everywhere.",
     "What did {Xs} {species} wreck?", "What has {Xs} {species} chewed through?"),
    (6, "{col} handed in her notice, she's off to a firm in {city2}.",
     "Where is the coworker who eats {Xs} food heading?", "Where is the coworker who keeps pinching {Xs} lunch off to?"),
    (3, "My teacher {teacher} says my work is good enough for the spring show.",
     "Who is instructing {Xo} in {hobby}?", "Who is {Xs} {hobby} teacher?"),
]
# statement|question|echoed question
OPEN = [
    "I could listen to {genre} records all day, {artist} especially.|What sort of concert tickets would make {Xo} happy?"
    "|What music could {X} listen to all day?",
    "Nothing beats the {dish} at that little {cuisine} place downtown.|What kind of restaurant would {X} pick for a night out?"
    "|What kind of place downtown would {X} pick for a night out?",
    "Crowded beaches are my nightmare, give me a quiet cabin in the {landscape} any day.|What kind of getaway would suit {Xo}?"
    "|Where would {X} like a cabin for a getaway?",
    "I've been eyeing a {gadget} for months but it's so pricey.|What present would {X} love to receive?"
    "|What present {has} {X} been eyeing for months?",
    "I gave up coffee, it's only {tea} tea for me now.|What drink should be offered to {Xo} on a visit?"
    "|What should {X} be offered instead of coffee on a visit?",
]
# (first statement, later statement, question, echoed question): the evidence is the later statement only.
CHANGED = [
    ("We booked a week in {dest_a} for {trip_month}.", "Change of plans, {dest_a} is off, we're flying to {dest_b} instead.",
     "Where {is} {X} going on holiday in {trip_month}?", "Where {is} {X} flying to in {trip_month}?"),
    ("I'm seriously thinking of quitting to open a {venture}.",
     "Forget the {venture}, I've applied to retrain as a {career}.", "What new line of work {is} {X} aiming for?",
     "What {has} {X} applied to retrain as?"),
    ("The housewarming is on the {d1}, you're invited.", "We had to push the housewarming back to the {d2}.",
     "On which date is {Xs} party at the new place?", "On which date is {Xs} housewarming now?"),
    ("I joined a {sport_a} club, training twice a week.",
     "I quit {sport_a}, my knees couldn't take it, it's {sport_b} now.", "Which sport {is} {X} doing these days?",
     "Which sport {is} {X} doing now, having quit the old one?"),
]
# (statement, the time question in its words for --echoed-words; {when} is the time expression).
DINNER = [("I made {dish} tonight, way too much garlic.", "What did {X} make {when}, with way too much garlic?"),
          ("Tonight was {dish}, I'm stuffed.", "Which dinner left {Xo} stuffed {when}?"),
          ("I tried {dish} for the first time this evening, not bad.",
           "What did {X} try for the first time {when}?"),
          ("Dinner was {dish}, the kids loved it.", "What did {Xs} kids love for dinner {when}?")]
FILM = [("Saw {film} at the cinema, the soundtrack was great.", "Which film did {X} see at the cinema {when}?"),
        ("We went to see {film}, I cried at the end.", "Which film did {X} go to see {when}?"),
        ("I finally watched {film}, a bit slow in the middle.", "Which film did {X} finally watch {when}?")]


def build_conversation(index: int, seed: int, shape: CorpusShape | None = None,
                       echoed_words: float = 0.0) -> BenchConversation:
    """Conversation number `index`: the same seed, index and shape (default: CorpusShape()) give the
    same conversation. `echoed_words` (0..1) is the share of its questions asked in their evidence's
    words (see `echo_words`); 0 leaves every question a paraphrase."""
    shape = shape or CorpusShape()
    sessions_n = shape.sessions
    rng = random.Random(seed * 1000 + index)
    user, friend = USERS[index % len(USERS)], FRIENDS[index % len(FRIENDS)]
    zone_name = ZONES[index % len(ZONES)]
    zone = ZoneInfo(zone_name)
    names = {"user": user, "friend": friend}
    taken: dict[str, set[str]] = {}
    lives = {"user": _life(rng, taken), "friend": _life(rng, taken)}
    plan = _Plan()
    other = {"user": "friend", "friend": "user"}
    sessions = list(range(sessions_n))

    # Session days: a few days apart (4..11), evenings in the conversation's own zone.
    start = datetime(2025, 9, 1 + index, 19, 0, tzinfo=zone)
    days: list[datetime] = []
    day = start
    for _ in sessions:
        days.append(day.replace(hour=rng.randint(19, 22), minute=rng.choice([0, 10, 25, 40, 50])))
        day = day + timedelta(days=rng.randint(4, 11))

    for who in ("user", "friend"):
        life = lives[who]
        single_sessions: dict[int, int] = {}
        for n, (prompt, statement, questions) in enumerate(SINGLE):
            session = rng.randint(0, sessions_n // 2)
            single_sessions[n] = session
            tag = f"{who}-single-{n}"
            lines = [] if prompt is None else [_Line(other[who], prompt)]
            lines += [_Line(who, statement.format(**life), tag), _Line(other[who], rng.choice(REACTIONS))]
            plan.beat(session, lines)
            for q, echoed in questions:
                plan.questions.append(("single-hop", _ask(q, who, names, **life), (tag,), None,
                                       _ask(echoed, who, names, **life)))
        for n, (first, later, question, echoed) in enumerate(MULTI):
            session = rng.randint(single_sessions[first] + 1, sessions_n - 1)
            tag = f"{who}-multi-{n}"
            plan.beat(session, [_Line(who, later.format(**life), tag), _Line(other[who], rng.choice(REACTIONS))])
            plan.questions.append(("multi-hop", _ask(question, who, names, **life), (f"{who}-single-{first}", tag), None,
                                   _ask(echoed, who, names, **life)))
        for n, template in enumerate(OPEN):
            statement, question, echoed = template.split("|")
            tag = f"{who}-open-{n}"
            plan.beat(rng.randrange(sessions_n), [_Line(who, statement.format(**life), tag),
                                                _Line(other[who], rng.choice(REACTIONS))])
            plan.questions.append(("open-domain", _ask(question, who, names, **life), (tag,), None,
                                   _ask(echoed, who, names, **life)))
        for n, (before, later, question, echoed) in enumerate(CHANGED):
            early = rng.randint(0, sessions_n // 2)
            late = rng.randint(early + 2, sessions_n - 1)
            plan.beat(early, [_Line(who, before.format(**life), f"{who}-plan-{n}-old"),
                              _Line(other[who], rng.choice(REACTIONS))])
            tag = f"{who}-plan-{n}"
            plan.beat(late, [_Line(who, later.format(**life), tag), _Line(other[who], rng.choice(REACTIONS))])
            plan.questions.append(("changed-plan", _ask(question, who, names, **life), (tag,), None,
                                   _ask(echoed, who, names, **life)))
        for n, (statement, question, echoed) in enumerate(rng.sample(EVENTS, 3)):
            tag = f"{who}-event-{n}"
            plan.beat(rng.randrange(sessions_n), [_Line(who, statement, tag), _Line(other[who], rng.choice(REACTIONS))])
            plan.questions.append(("temporal", _ask(question, who, names), (tag,), None, _ask(echoed, who, names)))
        # A dinner in every session: only a time expression tells them apart.
        dishes = rng.sample(DISHES, sessions_n)
        dinner_echoes: dict[int, str] = {}
        for session in sessions:
            dinner, dinner_echoes[session] = rng.choice(DINNER)
            plan.beat(session, [_Line(other[who], "What did you have for dinner?" if rng.random() < 0.5 else
                                      "Did you cook tonight?"),
                                _Line(who, dinner.format(dish=dishes[session]), f"{who}-dinner-{session}")])
        for session, offset, phrase in _day_questions(rng, days):
            question = _ask("What did {X} cook {when}?", who, names, when=phrase)
            plan.questions.append(("temporal", question, (f"{who}-dinner-{session}",), days[session] + offset,
                                   _ask(dinner_echoes[session], who, names, when=phrase)))
        # A film in the first session of each month.
        films = rng.sample(FILMS, 8)
        months: dict[tuple[int, int], int] = {}
        for session in sessions:
            months.setdefault((days[session].year, days[session].month), session)
        film_sessions = list(months.values())
        film_echoes: dict[int, str] = {}
        for n, session in enumerate(film_sessions):
            film, film_echoes[session] = rng.choice(FILM)
            plan.beat(session, [_Line(who, film.format(film=films[n]), f"{who}-film-{session}"),
                                _Line(other[who], rng.choice(REACTIONS))])
        for session in rng.sample(film_sessions[:-1], 2):
            month = days[session].strftime("%B")
            asked = days[-1] + timedelta(days=2)
            phrase = f"last {month}" if rng.random() < 0.5 else f"in {month}"
            question = _ask("Which movie did {X} catch {when}?", who, names, when=phrase)
            plan.questions.append(("temporal", question, (f"{who}-film-{session}",), asked,
                                   _ask(film_echoes[session], who, names, when=phrase)))
        if not shape.hard:
            continue
        hard_beats, hard_questions = plan_hard(rng, who, sessions_n, days, {"instruments": f"{who}-single-10"},
                                               taken)
        for hard in hard_beats:
            plan.beat(hard.session, [_Line(who, hard.text, hard.tag), _Line(other[who], rng.choice(REACTIONS))])
        for hard_question in hard_questions:
            slots = dict(hard_question.slots)
            plan.questions.append((hard_question.kind, _ask(hard_question.template, who, names, **slots),
                                   hard_question.tags, hard_question.asked,
                                   _ask(hard_question.echoed, who, names, **slots)))

    if echoed_words:
        plan.questions = echo_words(plan.questions, echoed_words, f"{seed}-{index}-echoed")
    return _lay_out(index, rng, plan, lives, names, zone_name, days, shape.session_turns)


def echo_words(questions: list[tuple[str, str, tuple[str, ...], object, str]], share: float,
               seed: str) -> list[tuple[str, str, tuple[str, ...], object, str]]:
    """The questions with `share` of them (drawn with their own seeded random, so the turns and the
    other questions are as without it) asked in the echoed wording: the words of the evidence, as
    people ask about what they said ("When did I paint the living room?" after "We painted the whole
    living room a dark green"), never the slot value asked for. The type, evidence and time stay."""
    chosen = set(random.Random(seed).sample(range(len(questions)), round(share * len(questions))))
    return [(kind, echoed if n in chosen else text, tags, asked, echoed)
            for n, (kind, text, tags, asked, echoed) in enumerate(questions)]


def _day_questions(rng: random.Random, days: list[datetime]) -> list[tuple[int, timedelta, str]]:
    """(session, how long after it the question is asked, the phrase) for the dinner questions."""
    out: list[tuple[int, timedelta, str]] = []
    for phrase_kind in ("yesterday", "days", "weeks"):
        session = rng.randrange(2, len(days))
        if phrase_kind == "yesterday":
            out.append((session, timedelta(days=1), "yesterday"))
        elif phrase_kind == "days":
            n = rng.randint(2, 3)
            out.append((session, timedelta(days=n), f"{NUMBER_WORDS[n]} days ago"))
        else:
            n = rng.choice([2, 3])
            out.append((session, timedelta(days=7 * n), f"{NUMBER_WORDS[n]} weeks ago"))
    return out


def _lay_out(index: int, rng: random.Random, plan: _Plan, lives: dict[str, dict[str, str]],
             names: dict[str, str], zone_name: str, days: list[datetime], session_turns: int) -> BenchConversation:
    """Orders each session's beats among greetings, chatter and distractors, and numbers the turns."""
    conversation = BenchConversation(f"conv-{index}", names["user"], names["friend"], zone_name)
    tag_ids: dict[str, str] = {}
    pools = {"species": SPECIES, "dest": DESTINATIONS, "book": BOOKS, "job": JOBS, "bone": BONES, "hobby": HOBBIES,
             "cuisine": [c for _, c in CUISINES], "car": CARS, "instrument": INSTRUMENTS, "district": DISTRICTS,
             "city": CITIES}
    for session in range(len(days)):
        beats = list(plan.beats.get(session, []))
        rng.shuffle(beats)
        lines: list[_Line] = [_Line("user", f"Hey {names['friend']}, got a minute?"),
                              _Line("friend", f"Always, {names['user']}. What's up?")]
        for beat in beats:
            lines += beat
        while len(lines) < session_turns - 1:
            if rng.random() < 0.5:
                slots = {key: rng.choice(pool) for key, pool in pools.items()}
                lines.append(_Line(rng.choice(["user", "friend"]), rng.choice(DISTRACTORS).format(**slots)))
            else:
                asker = rng.choice(["user", "friend"])
                question, answer = rng.choice(CHATTER)
                lines += [_Line(asker, question), _Line("friend" if asker == "user" else "user", answer)]
        lines.append(_Line("friend", "Talk soon!"))
        when = days[session]
        session_id = f"c{index}-s{session:02d}"
        for number, line in enumerate(lines):
            turn_id = f"{session_id}-t{number:02d}"
            role: Literal["user", "assistant"] = "user" if line.who == "user" else "assistant"
            conversation.turns.append(MemoryTurn(turn_id, session_id, when + timedelta(seconds=40 * number),
                                                 names[line.who], role, _tidy(line.text)))
            if line.tag:
                tag_ids[line.tag] = turn_id
    last = days[-1] + timedelta(days=1, hours=-6)
    for number, (kind, text, tags, asked, _echoed) in enumerate(plan.questions):
        asked_at = asked if isinstance(asked, datetime) else last
        evidence = tuple(tag_ids[t] for t in tags)
        conversation.questions.append(BenchQuestion(f"c{index}-q{number:03d}", conversation.name, _tidy(text), kind,
                                                    evidence, asked_at))
    return conversation


def build_corpus(conversations: int = 8, seed: int = 13, echoed_words: float = 0.0) -> list[BenchConversation]:
    """`conversations` long conversations (8 by default: about 5,900 turns and 680 questions), with
    `echoed_words` of the questions in their evidence's words (0: none)."""
    return [build_conversation(i, seed, echoed_words=echoed_words) for i in range(conversations)]


_WORD = re.compile(r"[a-z]+")
_COMMON = frozenset(
    """a an the and or but of to in on at by for with from is am are was were be been do does did have has had
    i me my we our you your he she her his it its they them their this that what which who whom when where how
    new now just so too very all again there here up off out into about s t ve m re ll d""".split()
)


def shared_words(question: str, evidence: str, names: set[str]) -> set[str]:
    """Content words (five-letter stems) a question repeats from its evidence, names and slot values aside."""

    def stems(text: str) -> set[str]:
        words = {w for w in _WORD.findall(text.lower()) if w not in _COMMON and w not in names}
        return {w[:5] for w in words}

    return stems(question) & stems(evidence)
