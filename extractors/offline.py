"""The offline knowledge backends in one place: corpus (articles + images), search, and the
connect-to map that routes the corpus's public host to a running `CorpusServer`.

    corpus = OfflineCorpus.load()                     # cached per process (~3 s the first time)
    with CorpusServer(corpus) as server:
        search, connect_to = offline_backends(corpus, server.port)
        fetcher = SafeFetcher(FetchConfig(allow_hosts=CORPUS_ALLOW_HOSTS), connect_to=connect_to)
        browser = PageBrowser(fetcher)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from functools import cached_property

from extractors.image_catalog import CORPUS_BASE_URL, CORPUS_HOST, CatalogImage, load_catalog
from extractors.local_search import LocalSearch
from extractors.wiki_offline import WikiOfflineSource, corpus_page_url
from schemas.rows import Topic

CORPUS_ALLOW_HOSTS = [CORPUS_HOST]  # FetchConfig.allow_hosts entry for the corpus host


class OfflineCorpus:
    """The vital-article topics and the image catalog, indexed by title / name."""

    def __init__(self, topics: Iterable[Topic], images: Sequence[CatalogImage] = ()):
        self.topics: list[Topic] = sorted(topics, key=lambda t: t.title)
        self.images: list[CatalogImage] = list(images)
        self._by_title = {topic.title: topic for topic in self.topics}
        self._by_name = {image.name: image for image in self.images}
        self._image_for_title: dict[str, CatalogImage] = {}
        for image in self.images:  # an article's image: the first catalog image naming it, by rank
            for title in image.articles:
                current = self._image_for_title.get(title)
                if current is None or image.articles.index(title) < current.articles.index(title):
                    self._image_for_title[title] = image

    _cache: OfflineCorpus | None = None
    _lock = threading.Lock()

    @classmethod
    def load(cls) -> OfflineCorpus:
        """The whole corpus (10,033 articles, ~20 images), loaded once per process."""
        with cls._lock:
            if cls._cache is None:
                cls._cache = cls(WikiOfflineSource().topics(), load_catalog())
            return cls._cache

    def topic(self, title: str) -> Topic | None:
        return self._by_title.get(title)

    def image(self, name: str) -> CatalogImage | None:
        return self._by_name.get(name)

    def image_for(self, title: str) -> CatalogImage | None:
        """The catalog image that illustrates an article, if any."""
        return self._image_for_title.get(title)

    def linked_in_corpus(self, topic: Topic) -> list[str]:
        return [title for title in topic.linked_titles if title in self._by_title]

    def linked_topics(self, topic: Topic) -> list[Topic]:
        """The corpus articles a topic's extract mentions (for multi-hop prompts)."""
        return [self._by_title[title] for title in self.linked_in_corpus(topic)]

    def page_url(self, title: str) -> str:
        return corpus_page_url(title)

    @cached_property
    def search(self) -> LocalSearch:
        """The BM25 search backend over this corpus (built on first use, ~1 s for 10k articles)."""
        return LocalSearch(self.topics, self.images)


def connect_to_map(server_port: int) -> dict[str, str]:
    """`SafeFetcher(connect_to=...)`: the corpus host's port 80 goes to the local corpus server."""
    return {f"{CORPUS_HOST}:80": f"127.0.0.1:{server_port}"}


def offline_backends(corpus: OfflineCorpus, server_port: int) -> tuple[LocalSearch, dict[str, str]]:
    """The offline search backend and the fetcher's connect-to map for a corpus server on `server_port`.
    Build the fetcher with `FetchConfig(allow_hosts=CORPUS_ALLOW_HOSTS)` and this map; wrap it in
    `PageBrowser` for browse and in the image downloader for image_search results."""
    return corpus.search, connect_to_map(server_port)


__all__ = [
    "CORPUS_ALLOW_HOSTS",
    "CORPUS_BASE_URL",
    "CORPUS_HOST",
    "OfflineCorpus",
    "connect_to_map",
    "offline_backends",
]
