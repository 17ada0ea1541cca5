"""The offline knowledge backends: Wikipedia topic source, category map, BM25 search, image catalog,
and the corpus server browsed over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from extractors import wiki_offline
from extractors.browse import PageBrowser
from extractors.category_map import RULES, TOPIC_DEFAULTS, WIKIPEDIA_TOPICS, map_category
from extractors.corpus_server import CorpusServer
from extractors.image_catalog import CATALOG_ENTRIES, load_catalog, skimage_data_dir
from extractors.local_search import BM25Index, tokenize
from extractors.offline import CORPUS_HOST, OfflineCorpus, connect_to_map, offline_backends
from extractors.wiki_offline import (
    TitleMatcher,
    WikiOfflineSource,
    corpus_page_url,
    title_path,
    wikipedia_url,
)
from schemas.categories import CATEGORIES
from schemas.errors import ConfigurationError, ExtractionError, FetchError
from schemas.ids import content_id
from schemas.protocols import FetchResult, SearchBackend


class LoopbackFetcher:
    """A tiny `Fetcher` for tests: real HTTP with httpx, hosts mapped by a connect-to table (unmapped
    hosts are refused, so nothing leaves 127.0.0.1)."""

    def __init__(self, connect_to: dict[str, str]):
        self.connect_to = connect_to

    async def fetch(self, url: str, *, accept: tuple[str, ...] = ()) -> FetchResult:
        parts = urlsplit(url)
        target = self.connect_to.get(f"{parts.hostname}:{parts.port or 80}")
        if target is None:
            raise FetchError(f"not mapped: {url}")
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            response = await client.get(
                urlunsplit(("http", target, parts.path, parts.query, "")), headers={"Host": parts.netloc}
            )
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        if response.status_code >= 400:
            raise FetchError(f"HTTP {response.status_code}", status=response.status_code)
        if accept and not content_type.startswith(accept):
            raise FetchError(f"content type {content_type}")
        return FetchResult(
            url=url,
            final_url=url,
            status=response.status_code,
            content_type=content_type,
            charset=response.charset_encoding or "",
            body=response.content,
        )


@pytest.fixture(scope="module")
def corpus() -> OfflineCorpus:
    return OfflineCorpus.load()


@pytest.fixture(scope="module")
def topics(corpus: OfflineCorpus):
    return {topic.title: topic for topic in corpus.topics}


# --- topic source ---------------------------------------------------------------------------------


def test_counts_and_topics(topics):
    assert len(topics) == 10_033
    by_topic = Counter(topic.source_category for topic in topics.values())
    assert set(by_topic) == set(WIKIPEDIA_TOPICS)
    assert by_topic["People"] == 1828
    assert by_topic["Mathematics"] == 256
    assert {topic.category for topic in topics.values()} <= set(CATEGORIES)


def test_known_article(topics):
    einstein = topics["Albert Einstein"]
    assert einstein.id == content_id("wiki_offline", "Albert Einstein", einstein.text)
    assert einstein.source == "wiki_offline"
    assert einstein.category == "physics"
    assert einstein.source_category == "Uncategorized"
    assert einstein.url == "https://en.wikipedia.org/wiki/Albert_Einstein"
    assert einstein.license == "CC BY-SA 4.0"
    assert einstein.linked_titles == [
        "Theory of relativity",
        "Mass–energy equivalence",
        "Special relativity",
        "Nobel Prize",
        "Physics",
        "Theoretical physics",
        "Photoelectric effect",
    ]
    hubble = topics["Hubble Space Telescope"]
    assert hubble.category == "astronomy"
    assert hubble.linked_titles == [
        "Low Earth orbit",
        "Public relations",
        "Edwin Hubble",
        "Telescope",
        "Science",
        "Flight",
    ]


def test_filters_and_order():
    maths = list(WikiOfflineSource(source_categories=["Mathematics"]).topics())
    assert len(maths) == 256
    assert [t.title for t in maths] == sorted(t.title for t in maths)
    games = list(WikiOfflineSource(categories=["game"]).topics())
    assert games and all(t.category == "game" for t in games)
    assert "Minecraft" in {t.title for t in games}


@pytest.mark.slow
def test_deterministic(corpus: OfflineCorpus):
    again = list(WikiOfflineSource().topics())
    assert [t.model_dump() for t in again] == [t.model_dump() for t in corpus.topics]


def test_missing_package(monkeypatch):
    monkeypatch.setattr(wiki_offline, "PACKAGE", "no_such_package_for_groundgen")
    with pytest.raises(ConfigurationError, match=r"not installed: pip install 'groundgen\[offline\]'"):
        list(WikiOfflineSource().topics())


@pytest.mark.parametrize(
    ("title", "path"),
    [
        ("Albert Einstein", "Albert_Einstein"),
        ("AT&T", "AT%26T"),
        ("A Doll's House", "A_Doll%27s_House"),
        ("Cell (biology)", "Cell_(biology)"),
        ("Mass–energy equivalence", "Mass%E2%80%93energy_equivalence"),
        ("AC/DC", "AC/DC"),
        ("C++", "C%2B%2B"),
    ],
)
def test_title_paths(title: str, path: str):
    assert title_path(title) == path
    assert wikipedia_url(title) == f"https://en.wikipedia.org/wiki/{path}"
    assert corpus_page_url(title) == f"http://corpus.groundgen.invalid/wiki/{path}"


def test_title_matcher():
    matcher = TitleMatcher(
        ["United States", "United States Congress", "Moon", "Europe", "Species", "Galaxy", "Milky Way"]
    )
    text = "The United States Congress met in Europe. The milky Way galaxy; species of Europe. Europeans."
    # longest match first; one-word titles only capitalised ("galaxy", "species" are not links); whole words
    assert matcher.find(text) == ["United States Congress", "Europe", "Milky Way"]
    assert matcher.find("Milky Way and the Galaxy", exclude="Galaxy") == ["Milky Way"]
    assert matcher.find("milky Way, United States") == ["Milky Way", "United States"]
    assert matcher.find("Moon") == []  # too short to be matched without noise


# --- category map ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "description", "category"),
    [
        ("People", "Argentine footballer (born 1987)", "sports"),
        ("People", "American actor and singer", "celebrities"),
        ("People", "American film director and actor", "film"),
        ("People", "Dutch painter (1853–1890)", "art"),
        ("People", "Polish-French physicist and chemist (1867–1934)", "physics"),
        ("People", "Japanese video game designer (born 1952)", "game"),
        ("People", "Swiss-French architect (1887–1965)", "architecture"),
        ("People", "King of Saudi Arabia from 1932 to 1953", "history"),
        ("People", "British statesman and writer (1874–1965)", "politics"),
        ("People", "English theologian (1328–1384)", "religion"),
        ("People", "Greek poet", "culture"),
        ("Physical sciences", "Constellation in the southern celestial hemisphere", "astronomy"),
        ("Physical sciences", "Chemical element with atomic number 16 (S)", "chemistry"),
        ("Physical sciences", "Subatomic particle with no charge", "physics"),
        ("Arts", "1954 Japanese film by Akira Kurosawa", "film"),
        ("Arts", "Japanese manga series by Eiichiro Oda", "anime"),
        ("Arts", "Cathedral in Paris, France, built 1163–1345", "architecture"),
        ("Arts", "Painting by Leonardo da Vinci", "art"),
        ("Everyday life", "Sandbox video game", "game"),
        ("Everyday life", "Racket sport", "sports"),
        ("Biology and health sciences", "Human disease caused by paramyxovirus", "medicine"),
        ("Biology and health sciences", "Species of flowering plant", "biology"),
        ("Geography", "City in Hokkaido, Japan", "geography"),
        ("History", "Russian state from 1547 to 1721", "history"),
        ("Technology", "Dam in Aswan, Egypt", "architecture"),
        ("Technology", "Two- or three-wheeled motor vehicle", "engineering"),
        ("Society and social sciences", "German fascist ideology", "politics"),
        ("Mathematics", "Study of mathematical knots", "physics"),
        ("Philosophy and religion", "Winged horse in Greek mythology", "religion"),
    ],
)
def test_map_category(topic: str, description: str, category: str):
    assert map_category(topic, "Some title", description, "") == category


def test_map_category_without_description_uses_extract():
    extract = "Saturn is the sixth planet from the Sun. It is a gas giant."
    assert map_category("Uncategorized", "Saturn", "", extract) == "astronomy"
    assert map_category("Nonexistent topic", "X", "", "") == "culture"


def test_rule_tables_name_known_categories():
    assert {rule.category for rule in RULES} <= set(CATEGORIES)
    assert set(TOPIC_DEFAULTS) == set(WIKIPEDIA_TOPICS)


# --- search ---------------------------------------------------------------------------------------


def test_bm25_ranking_and_ties():
    index = BM25Index([("c", "red apple"), ("a", "red apple"), ("b", "green apple pie"), ("d", "blue sky")])
    assert [r.doc_id for r in index.search("red apple", 10)] == ["a", "c", "b"]
    assert [r.position for r in index.search("red apple", 2)] == [1, 0]
    assert index.search("chocolate", 5) == []
    assert index.search("apple", 0) == []
    assert tokenize("The Galaxies and stars") == ["galaxy", "star"]


def test_local_search(corpus: OfflineCorpus):
    search, connect_to = offline_backends(corpus, 12345)
    assert isinstance(search, SearchBackend)
    assert connect_to == {"corpus.groundgen.invalid:80": "127.0.0.1:12345"} == connect_to_map(12345)
    hits = asyncio.run(search.search("Hubble Space Telescope launch year", 5))
    assert len(hits) == 5
    assert hits[0].title == "Hubble Space Telescope"
    assert hits[0].url == "http://corpus.groundgen.invalid/wiki/Hubble_Space_Telescope"
    assert hits[0].snippet.startswith("The Hubble Space Telescope is a space telescope that was launched")
    assert "1990" in hits[0].snippet and len(hits[0].snippet) <= 200
    assert asyncio.run(search.search("Hubble Space Telescope launch year", 5)) == hits
    assert [h.title for h in asyncio.run(search.search("Einstein photoelectric", 1))] == ["Albert Einstein"]
    assert asyncio.run(search.search("qwxzjv", 5)) == []
    # the article titled exactly as the query comes first, then BM25's order
    moon = [h.title for h in asyncio.run(search.search("moon", 5))]
    assert moon[0] == "Moon" and len(moon) == 5 and len(set(moon)) == 5


def test_image_search(corpus: OfflineCorpus):
    search = corpus.search
    hits = asyncio.run(search.image_search("galaxies in the Hubble deep field", 10))
    assert 1 <= len(hits) <= 5
    assert hits[0].url == "http://corpus.groundgen.invalid/images/hubble_deep_field.jpg"
    assert hits[0].page_url == "http://corpus.groundgen.invalid/wiki/Galaxy"
    assert (hits[0].width, hits[0].height) == (1000, 872)
    assert [h.url.rsplit("/", 1)[-1] for h in asyncio.run(search.image_search("tabby cat", 5))] == [
        "chelsea.png"
    ]
    # nothing in the catalogue shows it: no images (no stand-ins), also when only a minor word matches
    assert asyncio.run(search.image_search("qwxzjv", 5)) == []
    assert asyncio.run(search.image_search("Stefan Banach", 5)) == []
    assert asyncio.run(search.image_search("Japanese art", 5)) == []  # coffee's keywords say "latte art"
    assert [h.title for h in asyncio.run(search.image_search("Space Shuttle", 5))] == [
        "Astronaut Eileen Collins, NASA portrait"  # keyword "space shuttle commander"
    ]


# --- image catalog --------------------------------------------------------------------------------


def test_catalog():
    catalog = load_catalog()
    assert len(catalog) == len(CATALOG_ENTRIES) == 20
    for image in catalog:
        assert image.path.parent == skimage_data_dir()
        assert image.path.is_file() and image.width > 0 and image.height > 0
        assert image.url == f"http://corpus.groundgen.invalid/images/{image.name}"
        assert image.caption and image.keywords
    astronaut = next(image for image in catalog if image.name == "astronaut.png")
    assert astronaut.caption == "Astronaut Eileen Collins, NASA portrait"
    assert astronaut.content_type == "image/png"


def test_corpus_links_images_to_articles(corpus: OfflineCorpus):
    assert corpus.image_for("Galaxy").name == "hubble_deep_field.jpg"
    assert corpus.image_for("Cat").name == "chelsea.png"
    assert corpus.image_for("Albert Einstein") is None
    hubble = corpus.topic("Hubble Space Telescope")
    assert [t.title for t in corpus.linked_topics(hubble)] == hubble.linked_titles


# --- corpus server over real HTTP -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(corpus: OfflineCorpus):
    with CorpusServer(corpus) as running:
        yield running


@pytest.mark.slow
def test_server_routes(server: CorpusServer, corpus: OfflineCorpus):
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    page = httpx.get(f"{server.base_url}/wiki/Galaxy", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<img src="/images/hubble_deep_field.jpg"' in page.text
    assert "Creative" in page.text and "https://en.wikipedia.org/wiki/Galaxy" in page.text
    image = httpx.get(f"{server.base_url}/images/retina.jpg", timeout=5)
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content == corpus.image("retina.jpg").path.read_bytes()
    for missing in ("/wiki/No_such_article_xyz", "/images/nope.png", "/etc/passwd"):
        assert httpx.get(server.base_url + missing, timeout=5).status_code == 404


@pytest.mark.slow
def test_browse_corpus_page(server: CorpusServer, corpus: OfflineCorpus):
    browser = PageBrowser(LoopbackFetcher(connect_to_map(server.port)))
    url = corpus_page_url("Hubble Space Telescope")
    page = asyncio.run(browser.browse(url, "when was Hubble launched"))
    topic = corpus.topic("Hubble Space Telescope")
    assert page.url == page.final_url == url and page.status == 200
    assert page.title == "Hubble Space Telescope"
    assert page.text.startswith("# Hubble Space Telescope\n\nNASA/ESA space telescope launched in 1990")
    assert topic.text.split(". ")[0] in page.text
    assert page.text.replace("\n\n", " ").endswith(topic.text.rsplit(". ", 1)[-1])
    for boilerplate in (
        "cookies",
        "Main page",
        "Privacy policy",
        "What links here",
        "Skip to content",
        "See also",
    ):
        assert boilerplate not in page.text
    assert [image.url for image in page.images] == [
        "http://corpus.groundgen.invalid/images/hubble_deep_field.jpg"
    ]
    assert page.images[0].caption == corpus.image("hubble_deep_field.jpg").caption
    # the image URL resolves through the same fetcher
    fetched = asyncio.run(
        LoopbackFetcher(connect_to_map(server.port)).fetch(page.images[0].url, accept=("image/",))
    )
    assert fetched.content_type == "image/jpeg"
    assert fetched.body == corpus.image("hubble_deep_field.jpg").path.read_bytes()


@pytest.mark.slow
def test_browse_errors(server: CorpusServer):
    browser = PageBrowser(LoopbackFetcher(connect_to_map(server.port)))
    with pytest.raises(ExtractionError, match="nothing relevant"):
        asyncio.run(browser.browse(corpus_page_url("Hubble Space Telescope"), "chocolate cake recipe"))
    with pytest.raises(FetchError):
        asyncio.run(browser.browse(corpus_page_url("No such article xyz"), "anything"))


@pytest.mark.slow
def test_browse_with_safe_fetcher(server: CorpusServer, corpus: OfflineCorpus):
    fetcher_module = pytest.importorskip("extractors.fetcher")
    from schemas.config import FetchConfig

    async def run():
        async with fetcher_module.SafeFetcher(
            FetchConfig(allow_hosts=[CORPUS_HOST]), connect_to=connect_to_map(server.port)
        ) as fetcher:
            page = await PageBrowser(fetcher).browse(corpus_page_url("Cat"), "domestic cat")
            image = await fetcher.fetch(page.images[0].url, accept=("image/",))
            return page, image

    page, image = asyncio.run(run())
    assert page.title == "Cat" and "domesticated" in page.text
    assert image.body == corpus.image("chelsea.png").path.read_bytes()
