"""Live topic sources against a loopback server: MediaWiki lists with continuation and the rcstart/cmstart
watermark, RSS/Atom with conditional GETs and the newest-entry watermark, refresh picking only new ones."""

from __future__ import annotations

import pytest

from extractors.mediawiki import MediaWikiSource
from extractors.rss import RSSSource, parse_feed
from flows.refresh import new_topics
from flows.resources import Resources
from schemas.config import Config, FetchConfig, TopicsConfig
from schemas.errors import UnsafeURLError
from testkit.servers.feeds import FeedEntry, State, WikiPage, run_feed_server
from warehouse.store import Warehouse

pytestmark = pytest.mark.slow

PAGES = [
    WikiPage(
        "Hubble Space Telescope",
        "The Hubble Space Telescope is a space telescope launched in 1990.",
        "2026-01-01T10:00:00Z",
        "space telescope",
        "Astronomy",
    ),
    WikiPage(
        "Ada Lovelace",
        "Ada Lovelace was an English mathematician born in 1815.",
        "2026-01-02T10:00:00Z",
        "English mathematician",
        "People",
    ),
    WikiPage(
        "Eiffel Tower",
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
        "2026-01-03T10:00:00Z",
        "tower in Paris",
        "Astronomy",
    ),
]


@pytest.fixture
def server():
    with run_feed_server(State(pages=list(PAGES))) as (base, state):
        yield base, state, FetchConfig(allow_hosts=[base.removeprefix("http://")])


def test_mediawiki_recent_changes_follow_continuation_and_the_watermark(server, tmp_path):
    base, state, fetch = server
    source = MediaWikiSource([f"{base}/w/api.php?list=recentchanges&rclimit=2"], fetch=fetch)
    topics, states = source.topics_since({})
    assert sorted(t.title for t in topics) == ["Ada Lovelace", "Eiffel Tower", "Hubble Space Telescope"]
    lists = [params for path, params, _ in state.requests if params.get("list") == "recentchanges"]
    assert [p.get("rccontinue") for p in lists] == [None, "2"]  # two pages of two
    assert "rcstart" not in lists[0] and lists[0]["rcdir"] == "newer"
    assert [s.model_dump(include={"id", "source", "watermark"}) for s in states] == [
        {
            "id": f"mediawiki:{base}/w/api.php?list=recentchanges&rclimit=2",
            "source": "mediawiki",
            "watermark": "2026-01-03T10:00:00Z",
        }
    ]
    hubble = next(t for t in topics if t.title == "Hubble Space Telescope")
    assert hubble.url == f"{base}/wiki/Hubble_Space_Telescope"
    assert hubble.updated_at.isoformat() == "2026-01-01T10:00:00+00:00"
    assert hubble.description == "space telescope"

    with Warehouse(tmp_path / "w.duckdb") as warehouse:
        warehouse.insert(topics)
        for row in states:
            warehouse.replace(row)
        state.pages.append(
            WikiPage(
                "Marie Curie",
                "Marie Curie was a physicist and chemist, born in 1867.",
                "2026-01-05T08:00:00Z",
            )
        )
        state.requests.clear()
        fresh, after = new_topics(source, warehouse, "mediawiki", 10)
    assert [t.title for t in fresh] == ["Marie Curie"]
    first_list = next(params for _, params, _ in state.requests if params.get("list") == "recentchanges")
    assert first_list["rcstart"] == "2026-01-03T10:00:00Z"
    assert after[0].watermark == "2026-01-05T08:00:00Z"


def test_mediawiki_category_members_and_the_allowlist(server):
    base, state, fetch = server
    url = f"{base}/w/api.php?list=categorymembers&cmtitle=Category:Astronomy"
    topics, states = MediaWikiSource([url], fetch=fetch).topics_since({})
    assert sorted(t.title for t in topics) == ["Eiffel Tower", "Hubble Space Telescope"]
    assert {t.source_category for t in topics} == {"Astronomy"}
    assert states[0].watermark == "2026-01-03T10:00:00Z"
    with pytest.raises(UnsafeURLError):
        MediaWikiSource([url], fetch=FetchConfig()).topics_since({})  # loopback is not allowed by default


def test_rss_conditional_get_and_newest_entry_watermark(server, tmp_path):
    base, state, fetch = server
    state.entries = [
        FeedEntry(
            "Comet 12P returns",
            "The comet 12P/Pons-Brooks was visible in 2024 from Earth.",
            "2026-02-01T09:00:00Z",
            f"{base}/a",
        ),
        FeedEntry(
            "New bridge opens",
            "A suspension bridge 1,200 m long opened in Norway in 2026.",
            "2026-02-02T09:00:00Z",
            f"{base}/b",
            "Engineering",
        ),
    ]
    source = RSSSource([f"{base}/feed.xml"], fetch=fetch)
    topics, states = source.topics_since({})
    assert [t.title for t in topics] == ["Comet 12P returns", "New bridge opens"]
    assert topics[1].source_category == "Engineering" and topics[0].source_category == "Science news"
    assert states[0].etag == '"feed-1"' and states[0].watermark == "2026-02-02T09:00:00Z"
    assert states[0].last_modified == "Mon, 02 Feb 2026 09:00:00 GMT"

    unchanged, same = source.topics_since({s.id: s for s in states})
    assert unchanged == [] and state.statuses[-1] == ("/feed.xml", 304)
    assert same[0].watermark == states[0].watermark
    sent = state.requests[-1][2]
    assert (
        sent["If-None-Match"] == '"feed-1"' and sent["If-Modified-Since"] == "Mon, 02 Feb 2026 09:00:00 GMT"
    )

    state.entries.append(
        FeedEntry(
            "Rover lands", "A rover landed on Mars in February 2026.", "2026-02-03T12:00:00Z", f"{base}/c"
        )
    )
    state.feed_version = 2
    with Warehouse(tmp_path / "w.duckdb") as warehouse:
        warehouse.insert(topics)
        for row in states:
            warehouse.replace(row)
        fresh, after = new_topics(source, warehouse, "rss", 10)
    assert [t.title for t in fresh] == ["Rover lands"]
    assert (after[0].etag, after[0].watermark) == ('"feed-2"', "2026-02-03T12:00:00Z")


def test_atom_feed_and_resources_wiring(server, tmp_path):
    base, state, fetch = server
    state.entries = [
        FeedEntry(
            "Telescope first light",
            "The telescope saw first light in 2026.",
            "2026-03-01T00:00:00Z",
            f"{base}/t",
        )
    ]
    config = Config(
        workdir=tmp_path, fetch=fetch, topics=TopicsConfig(source="rss", urls=[f"{base}/atom.xml"])
    )
    source = Resources(config).topic_source()
    assert isinstance(source, RSSSource)
    topics, states = source.topics_since({})
    assert [(t.title, t.url, t.updated_at.isoformat()) for t in topics] == [
        ("Telescope first light", f"{base}/t", "2026-03-01T00:00:00+00:00")
    ]
    wiki = Config(
        workdir=tmp_path, fetch=fetch, topics=TopicsConfig(source="mediawiki", urls=[f"{base}/w/api.php"])
    )
    assert isinstance(Resources(wiki).topic_source(), MediaWikiSource)


def test_parse_feed_refuses_entities_and_non_feeds():
    from schemas.errors import ExtractionError

    bomb = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><rss><channel><item><title>&a;</title><description>x</description></item></channel></rss>'
    _, entries = parse_feed(bomb)
    assert entries == [] or "aaaa" not in entries[0]["title"]
    with pytest.raises(ExtractionError, match="not an RSS or Atom feed"):
        parse_feed(b"<html><body>hi</body></html>")
