"""The generated memory benchmark: its size, determinism, evidence, paraphrase, and its scoring code."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from convers.bench import memory as bench
from convers.bench import memory_corpus as corpus_module
from convers.bench import memory_corpus_hard as hard
from convers.bench.memory_corpus import (
    QUESTION_TYPES,
    build_conversation,
    build_corpus,
    shared_words,
)
from tests.memory_doubles import WordHashEmbedder


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


def test_at_least_five_long_conversations_and_500_questions_of_every_type(corpus) -> None:
    assert len(corpus) >= 5
    assert all(len(c.turns) >= 300 for c in corpus)
    assert sum(len(c.questions) for c in corpus) >= 500
    kinds = Counter(q.kind for c in corpus for q in c.questions)
    assert set(kinds) == set(QUESTION_TYPES)
    assert min(kinds.values()) >= 50
    assert len({c.user for c in corpus}) == len(corpus) and len({c.zone for c in corpus}) == len(corpus)


def test_the_same_seed_gives_the_same_conversation_and_another_seed_another() -> None:
    first, again, other = build_conversation(2, 13), build_conversation(2, 13), build_conversation(2, 14)
    assert first.turns == again.turns and first.questions == again.questions
    assert [t.text for t in first.turns] != [t.text for t in other.turns]


def test_the_earlier_shape_has_no_hard_questions_and_the_returning_person_keeps_it() -> None:
    from convers.bench.memory_corpus import EARLIER_SHAPE
    from convers.bench.returning import returning_conversation

    earlier = build_conversation(0, 13, EARLIER_SHAPE)
    assert len({t.session for t in earlier.turns}) == 20 and 360 <= len(earlier.turns) <= 400
    assert not {q.kind for q in earlier.questions} & {"several-facts", "inference"}
    assert returning_conversation().turns == earlier.turns
    assert len({t.session for t in build_conversation(0, 13).turns}) == 30


def test_every_question_has_evidence_turns_said_before_it_was_asked(corpus) -> None:
    for conversation in corpus:
        turns = {t.id: t for t in conversation.turns}
        assert len(turns) == len(conversation.turns)
        for question in conversation.questions:
            assert question.evidence and all(e in turns for e in question.evidence)
            assert all(turns[e].time < question.asked_at for e in question.evidence)
            if question.kind == "several-facts":
                assert 2 <= len(question.evidence) <= 5
                assert len({turns[e].session for e in question.evidence}) == len(question.evidence)
            elif question.kind == "inference":
                assert 2 <= len(question.evidence) <= 3
            else:
                assert len(question.evidence) == (2 if question.kind == "multi-hop" else 1)


def _slot_values() -> list[str]:
    """Every name and slot value the corpus fills into its sentences (people, pets, places, things)."""
    m = corpus_module
    pools = [m.USERS, m.FRIENDS, m.KIN, m.PETS, m.CITIES, m.COWORKERS, m.FIANCES, m.DESTINATIONS, m.SPORTS,
             m.HOBBIES, m.FOODS, m.INSTRUMENTS, m.SPECIES, m.BONES, m.VENTURES, m.CAREERS, m.LANDSCAPES, m.GADGETS,
             m.TEAS, m.JOBS, m.TEACHERS, m.CARS, m.BOOKS, m.DISTRICTS, m.RELATIVES,
             [" ".join(pair) for pair in (*m.CUISINES, *m.GENRES)],
             *[items for _, items, _ in hard.SEVERAL.values()]]
    return [value.lower() for pool in pools for value in pool]


def _names() -> set[str]:
    return {word for value in _slot_values() for word in value.split()}


def _shares_a_word(conversation, question, names: set[str]) -> bool:
    turns = {t.id: t for t in conversation.turns}
    return any(shared_words(question.text, turns[e].text, names) for e in question.evidence)


def test_questions_paraphrase_their_evidence(corpus) -> None:
    # Names and slot values (people, pets, places, things) may be repeated; other content words not.
    names = _names()
    repeated = total = 0
    for conversation in corpus:
        turns = {t.id: t for t in conversation.turns}
        for question in conversation.questions:
            for evidence in question.evidence:
                total += 1
                repeated += bool(shared_words(question.text, turns[evidence].text, names))
    assert repeated / total < 0.05


@pytest.fixture(scope="module")
def echoed():
    return build_corpus(echoed_words=0.5)


def test_echoed_words_ask_that_share_of_questions_in_their_evidence_words(corpus, echoed) -> None:
    names = _names()
    questions = [(c, q) for c in echoed for q in c.questions]
    sharing = sum(_shares_a_word(c, q, names) for c, q in questions) / len(questions)
    assert 0.4 <= sharing <= 0.6
    plain = [(c, q) for c in corpus for q in c.questions]
    assert sum(_shares_a_word(c, q, names) for c, q in plain) / len(plain) < 0.05
    # Only the wording of about half the questions changes: the turns, ids, types, evidence and times stay.
    changed = [(c, q) for (c, q), (_, old) in zip(questions, plain, strict=True) if q.text != old.text]
    assert abs(len(changed) / len(questions) - 0.5) < 0.02
    assert sum(_shares_a_word(c, q, names) for c, q in changed) / len(changed) > 0.9
    for new, old in zip(echoed, corpus, strict=True):
        assert new.turns == old.turns
        assert [(q.id, q.kind, q.evidence, q.asked_at) for q in new.questions] == [
            (q.id, q.kind, q.evidence, q.asked_at) for q in old.questions]
    assert build_conversation(3, 13, echoed_words=0.5).questions == echoed[3].questions  # deterministic
    assert {q.kind for _, q in changed} == set(QUESTION_TYPES)


def test_echoed_words_never_give_the_answer_away(corpus) -> None:
    # The echoed wording reuses the evidence's topic and verbs, never a slot value the paraphrase does not
    # name already (the pet's species in "What has my beagle chewed through?" is in both).
    import re

    values = [*_slot_values(), *(d.lower() for d in corpus_module.DISHES), *(f.lower() for f in corpus_module.FILMS)]

    def named(text: str) -> set[str]:
        return {v for v in values if re.search(rf"\b{re.escape(v)}\b", text.lower())}

    for new, old in zip(build_corpus(2, echoed_words=1.0), corpus[:2], strict=True):
        turns = {t.id: t for t in new.turns}
        for question, paraphrase in zip(new.questions, old.questions, strict=True):
            said = set().union(*(named(turns[e].text) for e in question.evidence))
            assert not (named(question.text) & said) - named(paraphrase.text), question.text


def test_a_changed_plan_keeps_its_older_version_as_a_distractor(corpus) -> None:
    conversation = corpus[0]
    texts = [t.text for t in conversation.turns]
    assert any(t.startswith("We booked a week in") for t in texts)
    assert any(t.startswith("Change of plans") for t in texts)


def test_evaluation_scores_recall_per_type_on_a_small_store(tmp_path: Path) -> None:
    conversation = build_conversation(0, 13)
    embedder = WordHashEmbedder()
    vectors = bench._Vectors(embedder, tmp_path / "cache")
    rankings = [bench.Ranking("defaults"), bench.Ranking("words", mode="lexical")]
    prepared = bench._prepare([conversation], rankings, vectors, embedder, tmp_path, lambda _: None)
    result = bench._evaluate(prepared, rankings[0])
    assert set(result["types"]) == set(QUESTION_TYPES)
    assert result["all"]["questions"] == len(conversation.questions)
    for row in (result["all"], *result["types"].values()):
        curve = row["recall_at_k"]
        assert curve == sorted(curve) and 0.0 <= curve[0] <= curve[-1] <= 1.0
        assert row["recall@5"] == curve[4]
    assert result["all"]["recall@10"] > 0.2  # word-hash vectors find a good share even so
    floors = bench._floor_profile(prepared, rankings[0], 10)
    assert floors["floors"]["0.0"]["recall@10"] == result["all"]["recall@10"]
    # Embeddings are cached by text: a second preparation embeds nothing.
    before = vectors.embedded
    bench._prepare([conversation], rankings[:1], vectors, embedder, tmp_path / "again", lambda _: None)
    assert vectors.embedded == before


def test_observation_answers_are_cached_so_a_rerun_asks_the_model_nothing(tmp_path: Path) -> None:
    from convers.bench.memory_observations import model_answers
    from tests.doubles import ScriptedLlm

    turns = [t for t in build_conversation(0, 13).turns if len(t.text.split()) >= 6][:5]
    cache = tmp_path / "cache" / "observations.json"
    llm = ScriptedLlm([f"{turns[0].speaker} likes", " walks."])
    first = model_answers(llm, "scripted", turns, cache, lambda _: None)
    assert len(llm.prompts) == len({(t.speaker, t.text) for t in turns}) and cache.exists()
    assert set(first) == {t.id for t in turns} and set(first.values()) == {f"{turns[0].speaker} likes walks."}
    again = model_answers(ScriptedLlm([], fail="not to be asked"), "scripted", turns, cache, lambda _: None)
    assert again == first
    other = ScriptedLlm(["x"])
    model_answers(other, "another model", turns[:1], cache, lambda _: None)
    assert len(other.prompts) == 1  # another model's answers are its own


def test_long_turns_wrap_every_turn_in_small_talk_that_names_nothing_asked_about(corpus) -> None:
    from convers.bench.memory_long_turns import ASIDES, FOLLOW_UPS, REACTIONS, lengthen
    from convers.memory.sentences import sentences

    long = lengthen(corpus[0], 13)
    assert long.questions == corpus[0].questions
    assert [(t.id, t.time, t.speaker) for t in long.turns] == [(t.id, t.time, t.speaker) for t in corpus[0].turns]
    assert all(old.text in new.text for old, new in zip(corpus[0].turns, long.turns, strict=True))
    several = sum(len(sentences(t.text)) > len(sentences(o.text)) for t, o in zip(long.turns, corpus[0].turns,
                                                                                     strict=True))
    assert several > len(long.turns) // 2
    assert lengthen(corpus[0], 13).turns == long.turns  # deterministic
    names = {corpus[0].user.lower(), corpus[0].friend.lower()}
    small_talk = " ".join(REACTIONS + ASIDES + FOLLOW_UPS)
    shared = {w for c in corpus for q in c.questions for w in shared_words(q.text, small_talk, names)}
    # Only everyday words ("three days ago", "these days", "last weekend"), no pet, job, food, place or pastime.
    assert shared <= {"days", "week", "weeke", "doing", "like", "get"}
