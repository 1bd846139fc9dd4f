"""Turns a stream of LLM text deltas into speakable chunks, as early as it is safe to speak them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

# Words that end in a period without ending a sentence, lower-cased, without the final period.
# TITLES always go on ("Dr. Smith", "e.g. apples"); the rest end a sentence only when the next word
# starts with a capital ("... and so on, etc. Then"), never before a digit ("No. 5", "ext. 12", "Apt. 4B").
TITLES = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "st", "mt", "vs", "e.g", "i.e", "cf", "viz", "gen", "gov",
        "sgt", "capt", "lt", "col", "cmdr", "rev", "hon", "pres", "sen", "rep", "fr",
    }
)
ABBREVIATIONS = TITLES | frozenset(
    {
        "sr", "jr", "ft", "etc", "al", "approx", "no", "nos", "fig", "figs", "vol", "vols", "inc", "ltd",
        "co", "corp", "dept", "est", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
        "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "a.m", "p.m", "u.s", "u.k", "ph.d",
        "min", "max", "tel", "ave", "blvd", "rd", "ext", "apt", "ste", "pp", "ch", "sec", "ca", "op", "ed",
    }
)
# "D.C.", "U.S.A.", "Ph.D.": letters joined by periods, which end a sentence only before a capital.
_INITIALISM = re.compile(r"^(?:[a-z]{1,2}\.)+[a-z]{1,2}$")
# After an initialism a capitalised word usually goes on with it ("the U.S. Army", "the U.K.
# Government", "5 p.m. Eastern"); the sentence ended only when that word is one that starts sentences
# ("I live in the U.S. Then I moved."): a closed class of pronouns, articles, conjunctions and the like.
# A new sentence that starts otherwise ("... the U.S. Americans ...") runs on without a pause, which
# sounds far better than a falling tone in the middle of "U.S. Army".
SENTENCE_STARTERS = frozenset(
    {
        "i", "i'm", "i've", "i'd", "i'll", "we", "you", "he", "she", "it", "it's", "they", "there", "there's",
        "this", "that", "these", "those", "the", "a", "an", "my", "our", "your", "his", "her", "its", "their",
        "then", "but", "and", "so", "or", "yet", "if", "when", "while", "after", "before", "since", "because",
        "although", "though", "however", "also", "still", "now", "today", "yesterday", "tomorrow", "later",
        "next", "first", "finally", "meanwhile", "instead", "otherwise", "anyway", "overall", "in", "on",
        "at", "for", "from", "to", "with", "by", "as", "of", "during", "what", "why", "how", "who", "where",
        "which", "is", "are", "was", "were", "do", "does", "did", "can", "could", "will", "would", "should",
        "let", "let's", "here", "here's", "not", "no", "yes", "many", "most", "some", "all", "each", "every",
        "both", "one", "please", "thanks", "sure", "okay", "well", "oh",
    }
)
# The word after an initialism, once a character after it shows it is complete.
_NEXT_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019]*(?=[^A-Za-z'\u2019])")
# One-word openers that a voice says on their own ("Sure, ..."): the first chunk may be just that,
# which tells the user at once that an answer is coming, as a person would.
OPENERS = frozenset(
    {
        "sure", "okay", "ok", "yes", "yeah", "yep", "no", "nope", "well", "hmm", "oh", "ah", "right",
        "great", "absolutely", "alright", "honestly", "actually", "hi", "hello", "hey", "sorry",
        "certainly", "definitely", "indeed", "interesting", "wow", "thanks",
    }
)
# "I" after a time ("at 7 p.m. I will") goes on with it far more often than it starts a sentence;
# when it does start one ("We met at 7 p.m. I was late."), running on costs no more than a short pause.
FIRST_PERSON = frozenset({"i", "i'm", "i've", "i'd", "i'll"})
# Quotes, brackets and closing emphasis that belong to the sentence they follow ('"stop."', "**done.**").
# German closes with \u201c and \u2018 (\u201eso\u201c), French with \u00bb after a no-break space
# (\u00ab\u00a0oui.\u00a0\u00bb): straight after the punctuation, these close; after a space they open.
_CLOSERS = "\"')]}\u201d\u2019\u201c\u2018\u00bb\u203a\u300d\u300f\uff09*_`"
_CLOSING = r"(?:[\u00a0\u202f]?[" + re.escape(_CLOSERS) + r"])*"
_SENTENCE_END = re.compile(r"([.!?]+|\u2026)(" + _CLOSING + r")(\s+)(?![\u00bb\u203a])")
# Sentence ends of scripts written without a space after them (Chinese, Japanese) or with their own
# marks (Devanagari danda, Arabic question mark): a boundary once any next character shows the closers
# are complete.
_SCRIPT_END = re.compile(r"([\u3002\uff01\uff1f\u0964\u0965\u061f\u06d4]+)([" + re.escape(_CLOSERS) + r"]*)(?=[\s\S])")
# A clause ends at , ; : or a dash between words ("5 - 3" is arithmetic, not a dash).
_CLAUSE_END = re.compile(r"([,;:\uff0c\u3001]|(?<=[^\W\d])\s[\u2013\u2014-])(\s+)")
# Punctuation that ends the text so far, before the whitespace that would confirm it has arrived.
# Not "." (it may be inside "example.com", "Node.js", "3.5") nor ":" ("https:", "10:30").
_SENTENCE_END_AT_END = re.compile(r"([!?])([" + re.escape(_CLOSERS) + r"]*)$")
_CLAUSE_END_AT_END = re.compile(r"([,;])$")
# A paragraph break, or a new line that starts a list item, a heading or a table row.
_HEADING_LINE = re.compile(r"\s*#{1,6}[ \t]+[^\n]*\w[^\n]*(?=\n)")
_PARAGRAPH = re.compile(r"\n\s*\n|\n(?=[ \t]*(?:(?:[-*+\u2022]|\d+[.)])\s|#{1,6}\s|\||```))")
# A fenced code block: its opening line (``` and a language tag) and, later, its closing line.
_FENCE_OPEN = re.compile(r"[ \t]*```[^\n`]*\n")
_FENCE_START = re.compile(r"(?:^|(?<=\n))[ \t]*```")
_FENCE_CLOSE = re.compile(r"(?:^|(?<=\n))[ \t]*```+[ \t]*(?=\n|$)")
# What a listener hears for a code block that is not read out (see SentenceSplitter).
CODE_BLOCK_SPOKEN = "Here is the code."
# A block of one short line is read plainly: a command ("pip install requests") or a result ("42").
CODE_LINE_MAX_WORDS = 6
CODE_LINE_MAX_CHARS = 48

_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_CODE_FENCE = re.compile(r"^[ \t]*```[^\n`]*$", re.MULTILINE)  # a fence line, not "```npm start```"
# Only matched pairs are emphasis: "2 * 3", "5**2" and "x*y" are arithmetic and stay for the voice.
_MD_EMPHASIS = re.compile(r"(?<![\w*])(\*{1,3}|_{2,3}|~~)(?=[^\s*])(.+?)(?<=[^\s*])\1(?![\w*])")
_MD_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# What is left of a pair that a chunk boundary split ("**This is bold." + "More.**").
# A run of stars is taken whole: "a ** b" is an operator between spaces, not two stray markers.
_MD_STRAY = re.compile(r"(?:(?<=\s)|^)(?:\*{1,3}|_{2,3}|~~)(?=[^\s\d*])|(?<=[^\s\d*])(?:\*{1,3}|_{2,3}|~~)(?=\s|$)|`+")
_MD_TABLE_RULE = re.compile(r"^\s*\|?(?:\s*:?-{2,}:?\s*\|)+\s*:?-*:?\s*$", re.MULTILINE)
_MD_TABLE_PIPE = re.compile(r"\s*\|\s*")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_MD_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+", re.MULTILINE)
_MD_QUOTE = re.compile(r"^\s*>\s?", re.MULTILINE)
_SPACES = re.compile(r"\s+")


def speakable(text: str) -> str:
    """Text with markdown and layout removed, as a voice should say it (emoji are left to spoken_text)."""
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_CODE_FENCE.sub("", text)
    text = _MD_HEADING.sub("", text)
    text = _MD_BULLET.sub("", text)
    text = _MD_QUOTE.sub("", text)
    text = _MD_TABLE_RULE.sub("", text)
    text = _MD_CODE_SPAN.sub(r"\2", text)
    for _ in range(3):  # nested pairs: "***both***", "**bold _and_ more**"
        text, count = _MD_EMPHASIS.subn(r"\2", text)
        if not count:
            break
    text = _MD_STRAY.sub("", text)
    if "|" in text:
        text = _MD_TABLE_PIPE.sub(", ", text).strip(", ")
    return _SPACES.sub(" ", text).strip()


def _word_before(text: str, end: int) -> str:
    start = end
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "(\"'":
        start -= 1
    return text[start:end]


def _sentence_end_verdict(text: str, match: re.Match[str]) -> bool | None:
    """Whether punctuation followed by whitespace ends a sentence; None while the next word has not come.

    The verdict depends only on the text up to the first character after the whitespace (or on a
    newline in it), so it is the same however the stream was sliced into deltas.
    """
    marks, space = match.group(1), match.group(3)
    if marks == "\u2026" or marks.startswith(".."):
        return False  # an ellipsis trails off mid-thought more often than it ends one
    after = match.end(3)
    next_char = text[after] if after < len(text) else None
    if "\n" in space:
        next_char = None  # a line break ends the sentence whatever comes next
    elif next_char is None:
        return None
    if next_char is not None and next_char.islower():
        # A sentence starts with a capital: this was "et al.", "D.C. last", 'the "Done." label', "stop!" she
        return False
    if marks != ".":
        return True  # ! ? ?! end sentences
    word = _word_before(text, match.start(1)).lower().rstrip(".")
    if word in TITLES:
        return False
    if next_char is not None and next_char.isdigit() and word in ABBREVIATIONS:
        return False  # "No. 5", "ext. 12", "Apt. 4B"
    if len(word) == 1 and word.isalpha():
        return False  # an initial, as in "J. R. R. Tolkien"
    if next_char is None and (word in ABBREVIATIONS or _INITIALISM.match(word)):
        return True  # "... in Washington, D.C.\n"
    if next_char is not None and next_char.isupper() and _INITIALISM.match(word):
        next_word = _NEXT_WORD.match(text, after)
        if next_word is None:
            return None  # "U.S. Ar": the whole word decides
        starter = next_word.group(0).lower().replace("\u2019", "'")
        if word in ("a.m", "p.m") and starter in FIRST_PERSON:
            return False  # "At 7 p.m. I will call": a pause after the time would break the sentence
        return starter in SENTENCE_STARTERS
    line_start = text.rfind("\n", 0, match.start(1)) + 1
    if word.isdigit() and text[line_start : match.start(1)].strip() == word:
        return False  # a numbered-list marker such as "2. "
    return True


def _in_code_span(text: str, position: int) -> bool:
    """Whether `position` is inside an inline code span (an odd number of backticks before it)."""
    return text.count("`", 0, position) % 2 == 1


def _is_plain_word(word: str) -> bool:
    """Letters only (an apostrophe or hyphen inside is fine): not a number, URL, initial or abbreviation."""
    letters = word.replace("'", "").replace("\u2019", "").replace("-", "")
    return len(letters) >= 2 and letters.isalpha() and word.lower() not in ABBREVIATIONS


def _first_clause_is_long_enough(clause: str, min_words: int) -> bool:
    """A first clause is spoken on its own from `min_words` words, or when it is a lone opener."""
    words = clause.split()
    if len(words) >= min_words:
        return True
    return len(words) == 1 and words[0].strip(",;:").lower() in OPENERS


def _ends_speakably(text: str, first_chunk_min_words: int) -> int | None:
    """Where the first chunk may be cut when the text so far ends in punctuation, or None.

    The whitespace that confirms a boundary comes with the next token, one token (33 ms at 30
    tokens/s) after the punctuation. For the first chunk, the one the user waits for, a plain word
    followed by ! ? (or , ; once the clause is long enough) is taken as the boundary at once. A "."
    waits for the next token: it may be inside "example.com", "Node.js" or "3.5".
    """
    sentence = _SENTENCE_END_AT_END.search(text)
    if sentence is not None:
        marks_start = sentence.start(1)
        if text[marks_start - 1 : marks_start] in ".!?\u2026":
            return None  # "..", "?!" or an ellipsis still forming
        if _is_plain_word(_word_before(text, marks_start)):
            return len(text)
        return None
    clause = _CLAUSE_END_AT_END.search(text)
    if clause is not None and _first_clause_is_long_enough(text, first_chunk_min_words):
        if _is_plain_word(_word_before(text, clause.start(1))):
            return len(text)
    return None


@dataclass
class SentenceSplitter:
    """Feed deltas with `push`, get speakable chunks back; `flush` at the end of the stream.

    The first chunk may end at a clause boundary once it has `first_chunk_min_words` words (or is
    a lone opener such as "Sure,"), so the voice can start before the first sentence is complete, and
    it is cut as soon as a plain word and its ! ? , or ; arrive, without waiting for the next token's
    whitespace (a "." waits one token: "example.com"). A sentence end is confirmed by the first
    character of the next word (a capital, not "et al. before"). A chunk never grows past
    `max_chunk_chars`: a run-on reply is split at the last clause or word boundary.

    A fenced code block is held until it closes and is not read line by line: a block of one short
    line ("pip install requests") is read plainly; a longer one is announced once with
    CODE_BLOCK_SPOKEN, or not at all when the chunk before introduced it ("Here's the code:"). A
    listener cannot follow code read aloud, and the transcript shows it. Inline code is read as part
    of its sentence (spoken text makes "my_func" "my func", "config.json" "config dot json"), and no
    chunk is cut inside it.

    Chunks do not depend on how the stream is sliced into deltas, with one exception that costs
    nothing audible: a first chunk ending "word!" or "word?" may be cut before a following "!",
    quote or lower-case word arrives. The same pushes always give the same chunks (speculation
    relies on that to replay the first chunk's early synthesis).
    """

    first_chunk_min_words: int = 4
    max_chunk_chars: int = 250
    _buffer: str = field(default="", init=False)
    _emitted: int = field(default=0, init=False)
    _last_spoken: str = field(default="", init=False)
    # Where to look for the closing fence of a held code block: the start of its last, unfinished line.
    _fence_scan: int = field(default=0, init=False)

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """Whatever is left when the stream ends."""
        chunks = self._drain(final=True)
        rest, self._buffer = self._buffer, ""
        return chunks + self._speakable(rest)

    def _drain(self, final: bool) -> list[str]:
        chunks: list[str] = []
        while True:
            block = self._code_block(final)
            if block == "hold":
                break
            if block is not None:
                chunks.extend(block)
                continue
            cut = self._next_cut()
            if cut is None:
                break
            chunks.extend(self._take(cut))
        return chunks

    def _take(self, cut: int) -> list[str]:
        piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._speakable(piece)

    def _speakable(self, piece: str) -> list[str]:
        spoken = speakable(piece)
        # A chunk with nothing to say ("**", an emoji, a bullet) is dropped, not sent to TTS.
        if not any(ch.isalnum() for ch in spoken):
            return []
        self._emitted += 1
        self._last_spoken = spoken
        return [spoken]

    def _code_block(self, final: bool) -> list[str] | Literal["hold"] | None:
        """The chunks of a fenced code block at the start of the buffer, "hold" until it closes, None if none."""
        text = self._buffer
        start = len(text) - len(text.lstrip())
        if not text.startswith("```", start):
            return None
        opening = _FENCE_OPEN.match(text, start)
        line_end = text.find("\n", start)
        line = text[start : len(text) if line_end < 0 else line_end]
        if opening is None and "`" in line.strip().lstrip("`"):
            return None  # "```npm start``` runs it": inline code at the start of a line, not a fence
        if opening is None and not final:
            return "hold"  # the language tag's line has not ended yet
        body_start = opening.end() if opening is not None else len(text)
        closing = _FENCE_CLOSE.search(text, max(body_start, self._fence_scan))
        # Before the stream ends, a closing line counts once its newline shows nothing follows on it.
        if closing is not None and not final and not text.startswith("\n", closing.end()):
            closing = None
        if closing is None and not final:
            self._fence_scan = max(body_start, text.rfind("\n") + 1)
            return "hold"
        body_end, block_end = (closing.start(), closing.end()) if closing is not None else (len(text), len(text))
        body, self._buffer, self._fence_scan = text[body_start:body_end], text[block_end:], 0
        return self._code_block_chunks(body)

    def _code_block_chunks(self, body: str) -> list[str]:
        lines = [line.strip() for line in body.splitlines() if line.strip()]
        if not lines:
            return []
        if len(lines) == 1 and len(lines[0]) <= CODE_LINE_MAX_CHARS and len(lines[0].split()) <= CODE_LINE_MAX_WORDS:
            return self._speakable(lines[0])
        if self._last_spoken.endswith(":"):
            return []  # "Here's the code:" said it already
        return self._speakable(CODE_BLOCK_SPOKEN)

    def _next_cut(self) -> int | None:
        # The earliest safe cut wins, so the result does not depend on how the stream was sliced.
        text = self._buffer
        cuts: list[int] = []
        fence = _FENCE_START.search(text)
        if fence is not None and text[: fence.start()].strip():
            # A code block starts a chunk of its own; the rules below see only the text before it.
            text = text[: fence.start()]
            cuts.append(fence.start())
        for match in _SENTENCE_END.finditer(text):
            verdict = _sentence_end_verdict(text, match)
            if verdict is None:
                break  # waiting for the next word; nothing later is in the buffer yet
            if verdict and not _in_code_span(text, match.end(2)):
                cuts.append(match.end(2))
                break
        script = _SCRIPT_END.search(text)
        if script is not None:
            cuts.append(script.end(2))
        # After a cut the buffer starts with the break that followed it ("\n\n- Apples\n- Pears"):
        # the first break with something to say before it is the one that ends a paragraph or item.
        heading = _HEADING_LINE.match(text)
        if heading is not None:
            cuts.append(heading.end())  # "## Summary" is said on its own, not run into the next line
        for paragraph in _PARAGRAPH.finditer(text):
            if text[: paragraph.start()].strip():
                cuts.append(paragraph.start() + 1)
                break
        if self._emitted == 0:
            for match in _CLAUSE_END.finditer(text):
                if _in_code_span(text, match.start(2)):
                    continue  # "Call `f(a, b)` first"
                if _first_clause_is_long_enough(text[: match.start(2)], self.first_chunk_min_words):
                    cuts.append(match.start(2))
                    break
            if not cuts and text.strip():
                at_end = _ends_speakably(text, self.first_chunk_min_words)
                if at_end is not None:
                    cuts.append(at_end)
        if cuts:
            return min(cuts)
        if len(text) > self.max_chunk_chars:
            return self._fallback_cut(text)
        return None

    def _fallback_cut(self, text: str) -> int:
        window = text[: self.max_chunk_chars]
        clauses = list(_CLAUSE_END.finditer(window))
        if clauses:
            return clauses[-1].start(2)
        space = window.rfind(" ")
        return space if space > 0 else self.max_chunk_chars
