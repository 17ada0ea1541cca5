"""The offline search backend: BM25 over the corpus articles and over the image catalog's captions.

Pure Python + numpy (no new dependency). Each term's postings hold precomputed BM25 weights, so a
query is a few numpy scatter-adds. Ranking is deterministic: score descending, ties by document id.
Hits carry the corpus server's canonical URLs, so results do not depend on the server's port.

Image search answers only with catalog images that match the query: an image's caption, keywords and
illustrated articles must hold at least `MIN_IMAGE_QUERY_COVERAGE` of the query's idf weight (a query
word no image mentions weighs as much as the rarest word), so "Japanese art" does not return the
coffee cup whose keywords say "latte art". Nothing matching => no images, as an honest search would;
the teacher then answers without references and the painter works from the text alone.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from extractors.image_catalog import CatalogImage
from extractors.wiki_offline import corpus_page_url
from schemas.protocols import ImageHit, SearchHit
from schemas.rows import Topic

MAX_IMAGE_HITS = 5
MIN_IMAGE_SCORE_RATIO = 0.3  # image hits scoring under this share of the best one are noise
MIN_IMAGE_QUERY_COVERAGE = 0.5  # share of the query's idf weight an image's text must contain
MAX_TOP_K = 50
SNIPPET_CHARS = 200

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves also""".split()
)

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“(\[]?[A-Z0-9])")


def normalize_term(word: str) -> str:
    """Lower case plus a light plural strip ("galaxies" -> "galaxy", "stars" -> "star")."""
    word = word.lower()
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Search terms of a text: words, lower-cased, stop words dropped, plurals folded."""
    return [normalize_term(word) for word in _WORD.findall(text) if word.lower() not in STOPWORDS]


def split_sentences(text: str) -> list[str]:
    return [sentence.strip() for sentence in _SENTENCE_END.split(text) if sentence.strip()]


def bm25_passage_scores(query: str, passages: Sequence[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """BM25 score of each passage for `query`, with idf taken over the passages themselves."""
    terms = set(tokenize(query))
    if not terms or not passages:
        return [0.0] * len(passages)
    counts = [Counter(tokenize(passage)) for passage in passages]
    lengths = [sum(count.values()) for count in counts]
    average = (sum(lengths) / len(lengths)) or 1.0
    total = len(passages)
    scores = []
    for count, length in zip(counts, lengths, strict=True):
        score = 0.0
        for term in terms:
            frequency = count.get(term, 0)
            if not frequency:
                continue
            containing = sum(1 for other in counts if term in other)
            idf = math.log(1 + (total - containing + 0.5) / (containing + 0.5))
            score += idf * frequency * (k1 + 1) / (frequency + k1 * (1 - b + b * length / average))
        scores.append(score)
    return scores


@dataclass(frozen=True)
class Ranked:
    doc_id: str
    position: int  # index into the documents as given to the index
    score: float


class BM25Index:
    """Okapi BM25 over `(doc_id, text)` documents. Build is O(tokens); a query touches only the
    postings of its terms."""

    def __init__(self, documents: Sequence[tuple[str, str]], k1: float = 1.5, b: float = 0.75):
        order = sorted(range(len(documents)), key=lambda i: documents[i][0])
        self._doc_ids = [documents[i][0] for i in order]
        self._positions = np.array(order, dtype=np.int64)  # sorted rank -> caller's position
        counts = [Counter(tokenize(documents[i][1])) for i in order]
        lengths = np.array([sum(count.values()) for count in counts], dtype=np.float64)
        average = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for doc, count in enumerate(counts):
            for term, frequency in count.items():
                docs, frequencies = postings.setdefault(term, ([], []))
                docs.append(doc)
                frequencies.append(frequency)
        total = len(counts)
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (docs, frequencies) in postings.items():
            doc_array = np.array(docs, dtype=np.int64)
            tf = np.array(frequencies, dtype=np.float64)
            idf = math.log(1 + (total - len(docs) + 0.5) / (len(docs) + 0.5))
            norm = k1 * (1 - b + b * lengths[doc_array] / average)
            self._postings[term] = (doc_array, idf * tf * (k1 + 1) / (tf + norm))
        self._idf = {
            term: float(math.log(1 + (total - len(d) + 0.5) / (len(d) + 0.5)))
            for term, (d, _) in postings.items()
        }

    def __len__(self) -> int:
        return len(self._doc_ids)

    def idf(self, term: str) -> float:
        return self._idf.get(term, 0.0)

    def term_weight(self, term: str) -> float:
        """The term's idf; a term no document holds weighs as much as one found in a single document
        would, plus a little (it is at least that rare)."""
        total = len(self._doc_ids)
        return self._idf.get(term, math.log(1 + (total + 0.5) / 0.5))

    def coverage(self, query: str, text: str) -> float:
        """Share of the query's idf weight whose terms occur in `text` (0 for an empty query)."""
        terms = set(tokenize(query))
        weights = {term: self.term_weight(term) for term in terms}
        total = sum(weights.values())
        if total <= 0:
            return 0.0
        present = set(tokenize(text))
        return sum(weight for term, weight in weights.items() if term in present) / total

    def search(self, query: str, top_k: int) -> list[Ranked]:
        """The best `top_k` documents with a positive score, best first, ties by doc id."""
        scores = np.zeros(len(self._doc_ids), dtype=np.float64)
        for term in sorted(set(tokenize(query))):
            posting = self._postings.get(term)
            if posting is not None:
                scores[posting[0]] += posting[1]
        matched = np.flatnonzero(scores > 0)
        if top_k <= 0 or not len(matched):
            return []
        # sorted ranks are in doc-id order, so a stable sort on -score breaks ties by doc id
        best = matched[np.argsort(-scores[matched], kind="stable")][:top_k]
        return [Ranked(self._doc_ids[i], int(self._positions[i]), float(scores[i])) for i in best]


def best_snippet(text: str, query: str, index: BM25Index, max_chars: int = SNIPPET_CHARS) -> str:
    """The sentence(s) of `text` that best match `query` (idf-weighted term overlap), ~max_chars."""
    sentences = split_sentences(text)
    if not sentences:
        return ""
    terms = set(tokenize(query))
    best, best_score = 0, 0.0
    for number, sentence in enumerate(sentences):
        score = sum(index.idf(term) for term in terms & set(tokenize(sentence)))
        if score > best_score:
            best, best_score = number, score
    snippet = sentences[best]
    for following in sentences[best + 1 :]:
        if len(snippet) >= max_chars * 0.6:
            break
        snippet = f"{snippet} {following}"
    return shorten(snippet, max_chars)


def shorten(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


class LocalSearch:
    """`SearchBackend` over the offline corpus: articles by BM25 over title (twice), description and
    extract; images by BM25 over the catalog's captions, keywords and illustrated article titles."""

    def __init__(self, topics: Sequence[Topic], images: Sequence[CatalogImage] = ()):
        self.topics = list(topics)
        self.images = list(images)
        self.index = BM25Index(
            [(t.id, f"{t.title}\n{t.title}\n{t.description}\n{t.text}") for t in self.topics]
        )
        self.image_index = BM25Index([(image.name, image.search_text) for image in self.images])
        self._titles = {topic.title for topic in self.topics}
        self._by_title = {" ".join(topic.title.lower().split()): n for n, topic in enumerate(self.topics)}

    async def search(self, query: str, top_k: int) -> list[SearchHit]:
        return self.search_sync(query, top_k)

    def search_sync(self, query: str, top_k: int) -> list[SearchHit]:
        """BM25 hits, except that the article whose title is the query itself comes first (a query
        "Moon" finds the article "Moon" before the longer "Moon landing", as a web search would)."""
        wanted = max(1, min(top_k, MAX_TOP_K))
        positions = [ranked.position for ranked in self.index.search(query, wanted)]
        exact = self._by_title.get(" ".join(query.lower().split()))
        if exact is not None:
            positions = [exact, *(position for position in positions if position != exact)][:wanted]
        hits = []
        for position in positions:
            topic = self.topics[position]
            hits.append(
                SearchHit(
                    title=topic.title,
                    url=corpus_page_url(topic.title),
                    snippet=best_snippet(topic.text, query, self.index),
                )
            )
        return hits

    async def image_search(self, query: str, top_k: int) -> list[ImageHit]:
        return self.image_search_sync(query, top_k)

    def image_search_sync(self, query: str, top_k: int) -> list[ImageHit]:
        wanted = max(1, min(top_k, MAX_IMAGE_HITS))
        ranking = self.image_index.search(query, wanted)
        chosen = [
            self.images[ranked.position]
            for ranked in ranking
            if ranked.score >= ranking[0].score * MIN_IMAGE_SCORE_RATIO
            and self.image_index.coverage(query, self.images[ranked.position].search_text)
            >= MIN_IMAGE_QUERY_COVERAGE
        ]
        return [self._image_hit(image) for image in chosen]

    def _image_hit(self, image: CatalogImage) -> ImageHit:
        page = next((title for title in image.articles if title in self._titles), "")
        return ImageHit(
            url=image.url,
            title=image.caption,
            page_url=corpus_page_url(page) if page else "",
            thumbnail_url=image.url,
            width=image.width,
            height=image.height,
        )
