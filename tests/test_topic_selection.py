from extractors.topic_selection import interleave_by_category, select_topics
from schemas.rows import Topic


def topic(topic_id: str, category: str) -> Topic:
    return Topic(id=topic_id, source="test", title=topic_id, text="text", category=category)


TOPICS = [
    topic("b2", "art"),
    topic("a1", "art"),
    topic("c1", "sports"),
    topic("a9", "physics"),
    topic("c3", "art"),
]


def test_interleaves_categories_in_name_order_and_ids_within():
    assert [t.id for t in interleave_by_category(TOPICS)] == ["a1", "a9", "c1", "b2", "c3"]


def test_selection_is_prefix_stable_when_more_are_wanted():
    assert [t.id for t in select_topics(TOPICS, 2)] == ["a1", "a9"]
    assert [t.id for t in select_topics(reversed(TOPICS), 4)] == ["a1", "a9", "c1", "b2"]
    assert len(select_topics(TOPICS, 100)) == 5
