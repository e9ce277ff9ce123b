"""The keyword tokenizer: text -> terms for BM25, Unicode-aware and dependency-free.

Core function: `tokenize(text, language="english") -> list[str]`, and `TOKENIZERS` (the
names a source's `tokenizer` option accepts).

Steps: Unicode NFKC normalisation (full-width letters, ligatures and compatibility forms
become their plain equivalents), case folding (`str.casefold`, which also folds the German
sharp s), then runs of letters and digits in any script. Punctuation, whitespace and
underscores separate terms, so "INV-20931" gives "inv" and "20931", and a query for the
bare number finds it. Scripts written without spaces (Han, Hiragana, Katakana, Hangul)
become overlapping character bigrams, the usual substitute for a dictionary segmenter
(Lucene's CJKAnalyzer does the same). With `language="english"`, English function words
are dropped and plurals reduced by Harman's S-stemmer (three suffix rules: "queries" ->
"query", "invoices" -> "invoice", "cats" -> "cat"); with "plain", terms are kept as they are.

Decision: no NLP dependency (NLTK, spaCy, a Snowball wheel). A full stemmer adds recall
on English but mangles identifiers, names and other languages, and the vector side of a
hybrid search already catches paraphrases; BM25's job here is exact terms. The S-stemmer
only touches alphabetic words longer than three letters ending in "s".
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

TOKENIZERS = ("english", "plain")
_RUN = re.compile(r"[^\W_]+")
# Scripts written without spaces between words: Han (CJK ideographs and extensions),
# Hiragana, Katakana and Hangul.
_SPACELESS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
                        r"\U00020000-\U0002ffff]+")
_ENGLISH_STOPWORDS = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself
just me more most my myself no nor not now of off on once only or other our ours ourselves out
over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves
"""
ENGLISH_STOPWORDS = frozenset(_ENGLISH_STOPWORDS.split())


def tokenize(text: str, language: str = "english") -> list[str]:
    """The terms of `text`, in order (repeats kept: BM25 counts them)."""
    out: list[str] = []
    english = language == "english"
    for run in _RUN.findall(unicodedata.normalize("NFKC", text).casefold()):
        if _SPACELESS.search(run) is None:
            if english:
                if run in ENGLISH_STOPWORDS:
                    continue
                run = _s_stem(run)
            out.append(run)
            continue
        out.extend(_split_spaceless(run))
    return out


def _split_spaceless(run: str) -> list[str]:
    """Bigrams of each spaceless stretch of `run`; the rest of it as whole terms."""
    terms: list[str] = []
    pos = 0
    for match in _SPACELESS.finditer(run):
        if match.start() > pos:
            terms.append(run[pos:match.start()])
        chars = match.group()
        terms.extend([chars] if len(chars) == 1 else
                     [chars[i:i + 2] for i in range(len(chars) - 1)])
        pos = match.end()
    if pos < len(run):
        terms.append(run[pos:])
    return terms


@lru_cache(maxsize=1 << 16)
def _s_stem(word: str) -> str:
    """Harman's S-stemmer (1991) on alphabetic words longer than three letters."""
    if len(word) <= 3 or not word.endswith("s") or not word.isalpha():
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if not word.endswith(("us", "ss")):
        return word[:-1]
    return word


__all__ = ["ENGLISH_STOPWORDS", "TOKENIZERS", "tokenize"]
