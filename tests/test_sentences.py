"""SentenceSplitter: where a token stream may be cut into speakable chunks."""

from __future__ import annotations

import pytest

from convers.engine.reply.sentences import SentenceSplitter, speakable


def split_stream(text: str, step: int = 3, **options: int) -> list[str]:
    """Feeds `text` in small deltas, as an LLM would, and collects every chunk."""
    splitter = SentenceSplitter(**options)
    chunks: list[str] = []
    for i in range(0, len(text), step):
        chunks.extend(splitter.push(text[i : i + step]))
    chunks.extend(splitter.flush())
    return chunks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("Dr. Smith will see you now. Please wait.", ["Dr. Smith will see you now.", "Please wait."]),
        ("Bring fruit, e.g. apples and pears. Thanks!", ["Bring fruit, e.g. apples and pears.", "Thanks!"]),
        ("It costs 3.5 dollars. Cheap.", ["It costs 3.5 dollars.", "Cheap."]),
        ("See https://example.com/a.b?c=1 for more. Bye.", ["See https://example.com/a.b?c=1 for more.", "Bye."]),
        ("Well... I guess so. Yes.", ["Well... I guess so.", "Yes."]),
        ("Hmm\u2026 maybe later. Okay.", ["Hmm\u2026 maybe later.", "Okay."]),
        ("J. R. R. Tolkien wrote it. Right?", ["J. R. R. Tolkien wrote it.", "Right?"]),
        ("Really?! No way. Wow!", ["Really?!", "No way.", "Wow!"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("We met in 2023. It rained.", ["We met in 2023.", "It rained."]),
        ("No trailing punctuation", ["No trailing punctuation"]),
        ("", []),
    ],
)
def test_sentence_boundaries(text: str, expected: list[str]) -> None:
    # first_chunk_min_words is large here so only sentence rules are under test.
    assert split_stream(text, first_chunk_min_words=100) == expected


@pytest.mark.parametrize("step", [1, 2, 5, 50])
def test_chunks_do_not_depend_on_delta_size(step: int) -> None:
    text = "Dr. Who costs 3.5 pounds, e.g. cheap. Go to example.org now! Done... or not? Yes."
    assert split_stream(text, step=step) == split_stream(text, step=len(text))


@pytest.mark.parametrize(
    ("text", "expected_first"),
    [
        # A first clause of four or more words is spoken early ...
        ("The weather today looks sunny, with a light breeze later on.", "The weather today looks sunny,"),
        # ... and so is a lone opener, as a person says "Sure," before the answer ...
        ("Sure, I can help you with that today.", "Sure,"),
        ("Well, it depends on the weather.", "Well,"),
        # ... but not any other single word.
        ("Paris, the capital, is lovely in spring.", "Paris, the capital, is lovely in spring."),
    ],
)
def test_first_chunk_is_a_short_clause(text: str, expected_first: str) -> None:
    assert split_stream(text)[0] == expected_first


def test_only_the_first_chunk_is_cut_at_a_clause() -> None:
    chunks = split_stream("The weather today looks sunny, with wind. Later on, it may rain in the north, sadly.")
    assert chunks == ["The weather today looks sunny,", "with wind.", "Later on, it may rain in the north, sadly."]


def test_run_on_text_is_capped() -> None:
    text = " ".join(["word"] * 200)
    chunks = split_stream(text, max_chunk_chars=100)
    assert len(chunks) > 5
    assert all(len(chunk) <= 100 for chunk in chunks)
    assert " ".join(chunks).split() == text.split()


def test_markdown_lists_split_per_item_and_are_cleaned() -> None:
    text = "Here are **two** ideas:\n\n1. Take a *walk*.\n2. Call [Ana](https://x.y) \U0001f600\n"
    chunks = split_stream(text, first_chunk_min_words=100)
    assert chunks == ["Here are two ideas:", "Take a walk.", "Call Ana \U0001f600"]  # spoken_text drops the face


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("**Bold** and _under_ and `code`", "Bold and _under_ and code"),
        ("## Heading\nText", "Heading Text"),
        ("> quoted line", "quoted line"),
        ("[link text](http://a.b/c)", "link text"),
        # Emoji stay for spoken_text, which names or drops them.
        ("Great job! \U0001f389\U0001f44d", "Great job! \U0001f389\U0001f44d"),
    ],
)
def test_speakable_strips_markdown(raw: str, spoken: str) -> None:
    assert speakable(raw) == spoken


def test_emoji_only_chunk_is_dropped() -> None:
    assert split_stream("\U0001f600\U0001f600. Hi there.", first_chunk_min_words=100) == ["Hi there."]


@pytest.mark.parametrize(
    ("deltas", "first"),
    [
        # The punctuation token arrives; the next token's space is not waited for (a "." waits one
        # token, since it may be inside "example.com": see the next test).
        (["That", " sounds", " like", " a", " good", " plan.", " It"], "That sounds like a good plan."),
        (["Good", " question!"], "Good question!"),
        (["Is", " it", " raining?"], "Is it raining?"),
        (['He', ' said', ' "stop!"'], 'He said "stop!"'),
        (["The", " weather", " today", " looks", " sunny,"], "The weather today looks sunny,"),
        (["Don't", " worry", "."," We"], "Don't worry."),
    ],
)
def test_first_chunk_is_cut_when_its_punctuation_arrives(deltas: list[str], first: str) -> None:
    splitter = SentenceSplitter()
    chunks: list[str] = []
    for delta in deltas:
        chunks.extend(splitter.push(delta))
    assert chunks == [first]


@pytest.mark.parametrize(
    "deltas",
    [
        ["It", " costs", " 3."],  # 3.5
        ["Bring", " fruit", " e.g."],  # an abbreviation
        ["Ask", " Dr."],
        ["Written", " by", " J."],  # an initial
        ["Well.."],  # an ellipsis forming
        ["See", " example.com/a.b?"],  # a URL's query
        ["Paris,"],  # a clause shorter than first_chunk_min_words
        ["It", " is", " 10:"],  # 10:30
        ["Visit", " example."],  # example.com
        ["Open", " config."],  # config.json
        ["You", " can", " find", " it", " at", " https:"],  # a URL, not a clause
        ["Write", " to", " ana."],  # ana.lopez@example.com
        ["She", " lives", " in", " Washington", " D.C. "],  # the next word decides
    ],
)
def test_first_chunk_waits_where_the_punctuation_may_not_end_it(deltas: list[str]) -> None:
    splitter = SentenceSplitter()
    chunks: list[str] = []
    for delta in deltas:
        chunks.extend(splitter.push(delta))
    assert chunks == []


def test_only_the_first_chunk_is_cut_before_the_whitespace() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Okay then!") == ["Okay then!"]
    assert splitter.push(" Here we go.") == []  # the second waits for its whitespace as usual
    assert splitter.push(" Next") == ["Here we go."]


CODE = "```python\nimport sys\n\ndef main():\n    print('Done. Really?')\n    return 0\n```"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A block the chunk before introduced is not read at all ...
        (f"Here's the code:\n\n{CODE}\n\nRun it and see.", ["Here's the code:", "Run it and see."]),
        # ... one that comes unannounced is announced once, never read line by line ...
        (f"Sure. Try this.\n{CODE}\nThat prints it.", ["Sure.", "Try this.", "Here is the code.", "That prints it."]),
        (CODE, ["Here is the code."]),
        # ... and a short one-liner is read plainly.
        ("Install it:\n\n```bash\npip install requests\n```\n\nThen restart.", ["Install it:", "pip install requests", "Then restart."]),
        ("The answer is:\n```\n42\n```", ["The answer is:", "42"]),
        # Two blocks after one introduction; an empty block says nothing.
        (f"Two files:\n{CODE}\n{CODE}\nEnd.", ["Two files:", "End."]),
        ("Empty:\n```\n```\nDone.", ["Empty:", "Done."]),
        # A block the stream leaves open ends with the stream.
        ("Start:\n```python\nx = 1\ny = 2", ["Start:"]),
        (f"Okay.\n{CODE[:-4]}", ["Okay.", "Here is the code."]),
        # Inline code is part of its sentence and is never cut inside.
        ("Call `f(a, b)` first, then `g()`. Next step.", ["Call f(a, b) first,", "then g().", "Next step."]),
        ("Use `x. Then y` as the value. Done.", ["Use x. Then y as the value.", "Done."]),
        ("Hi.\n```npm start``` runs it. Done.", ["Hi.", "npm start runs it.", "Done."]),
    ],
)
@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_code_blocks_are_not_read_line_by_line(text: str, expected: list[str], step: int) -> None:
    assert split_stream(text, step=step) == expected


def test_a_code_block_is_held_until_it_closes() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Sure.\n```python\nimport os\n") == ["Sure."]
    assert splitter.push("print(os.sep)\nprint('Hi. There.')\n\nx = 1\n") == []
    assert splitter.push("```\nThat is all. Bye") == ["Here is the code.", "That is all."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A capitalised word after an initialism goes on with it ...
        ("He served in the U.S. Army for years. Then he retired.", ["He served in the U.S. Army for years.", "Then he retired."]),
        ("The U.K. Government met today. They agreed.", ["The U.K. Government met today.", "They agreed."]),
        ("She works at the U.N. Security Council now.", ["She works at the U.N. Security Council now."]),
        ("Join at 5 p.m. Eastern time. Bye.", ["Join at 5 p.m. Eastern time.", "Bye."]),
        # ... unless it is a word that starts sentences.
        ("I live in the U.S. Then I moved.", ["I live in the U.S.", "Then I moved."]),
        ("They visited the U.S. I stayed home.", ["They visited the U.S.", "I stayed home."]),
        ("Born in the U.S.A. In 1990 she left.", ["Born in the U.S.A.", "In 1990 she left."]),
        ("It ends at 5 p.m. The bus waits.", ["It ends at 5 p.m.", "The bus waits."]),
        ("Back in the U.K. It\u2019s raining.", ["Back in the U.K.", "It\u2019s raining."]),
    ],
)
@pytest.mark.parametrize("step", [1, 4, 1000])
def test_an_initialism_before_a_capital(text: str, expected: list[str], step: int) -> None:
    assert split_stream(text, step=step, first_chunk_min_words=100) == expected


def test_the_word_after_an_initialism_is_waited_for() -> None:
    splitter = SentenceSplitter(first_chunk_min_words=100)
    assert splitter.push("He joined the U.S. Ar") == []
    assert splitter.push("my. Then") == ["He joined the U.S. Army."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Er sagte: \u201eIch komme.\u201c Dann ging er.", ["Er sagte: \u201eIch komme.\u201c", "Dann ging er."]),
        ("Il a dit \u00ab\u00a0Je reviens.\u00a0\u00bb Puis il est parti.", ["Il a dit \u00ab Je reviens. \u00bb", "Puis il est parti."]),
        # (Not first: a first chunk may be cut at "sure?" before its quote comes, see SentenceSplitter.)
        ("Hi. \u201cAre you sure?\u201d she asked. \u201cYes,\u201d he said.",
         ["Hi.", "\u201cAre you sure?\u201d she asked.", "\u201cYes,\u201d he said."]),
    ],
)
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_closing_quotes_of_other_languages_stay_with_their_sentence(text: str, expected: list[str], step: int) -> None:
    assert split_stream(text, step=step, first_chunk_min_words=100) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A power operator between spaces is not a stray emphasis marker: the voice says "to the power of".
        ("Use a ** b for powers.", ["Use a ** b for powers."]),
        ("It is 2 ** 10, which is 1024.", ["It is 2 ** 10,", "which is 1024."]),
        # "I" after a time goes on with it; other sentence starters after an initialism still end it.
        ("At 7 p.m. I will call you. Then we eat.", ["At 7 p.m. I will call you.", "Then we eat."]),
        ("I live in the U.S. Then I moved.", ["I live in the U.S.", "Then I moved."]),
    ],
)
def test_operators_and_times_are_not_cut(text: str, expected: list[str]) -> None:
    assert split_stream(text) == expected
    assert [split_stream(text, step=step) for step in (1, 7)] == [expected, expected]
