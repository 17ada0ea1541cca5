"""The offline template writer: exact rendered prompts, facts, ids, multi-hop."""

from __future__ import annotations

import asyncio

from schemas.config import Config, WriterConfig
from schemas.ids import content_id
from schemas.rows import Topic
from synthesis.template_writer import TemplateWriter, load_writer_templates, required_facts

TOWER = Topic(
    id="t1",
    source="wiki_offline",
    title="Eiffel Tower",
    text="The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was designed by the company "
    "of Gustave Eiffel and built from 1887 to 1889. It is 330 metres tall.",
    description="Tower in Paris, France (1889)",
    category="architecture",
)
ENGINEER = Topic(
    id="t2",
    source="wiki_offline",
    title="Gustave Eiffel",
    text="Gustave Eiffel was a French civil engineer born in 1832 in Dijon.",
    description="French civil engineer (1832–1923)",
    category="engineering",
)
IDOL = Topic(
    id="t3",
    source="rss",
    title="Hatsune Miku",
    text="Hatsune Miku debuted in 2007.",
    description="",
    category="anime",
)


def write(config: WriterConfig, topic: Topic, linked: list[Topic]):
    return asyncio.run(TemplateWriter(config).write(topic, linked))


def test_single_hop_prompt_exact():
    [prompt] = write(WriterConfig(multi_hop_share=0.0), TOWER, [ENGINEER])
    writer = TemplateWriter(WriterConfig(multi_hop_share=0.0)).fingerprint
    assert prompt.prompt == (
        "Create a museum information panel about Eiffel Tower (Tower in Paris, France). Show Eiffel Tower as the "
        "main illustration, faithful to its real appearance, and print as readable text a short timeline of its "
        "key dates and the most important numbers associated with it. Every name, date and value on the panel "
        "must be correct."
    )
    assert prompt.required_facts == ["Gustave Eiffel", "1887", "1889", "330 metres"]
    assert (prompt.category, prompt.difficulty, prompt.hops, prompt.topic_ids) == (
        "architecture",
        "medium",
        1,
        ["t1"],
    )
    assert prompt.id == content_id(writer, ["t1"], "museum_panel") and prompt.writer == writer


def test_multi_hop_prompt_names_only_the_first_subject():
    [prompt] = write(WriterConfig(multi_hop_share=1.0), TOWER, [ENGINEER])
    assert prompt.prompt == (
        "Design a poster showing Eiffel Tower together with the French civil engineer linked to it. Both must look "
        "like their real counterparts; label each one with its correct name and the year most associated with it."
    )
    assert "Gustave" not in prompt.prompt and "1832" not in prompt.prompt
    assert (prompt.hops, prompt.difficulty, prompt.topic_ids) == (2, "hard", ["t1", "t2"])
    assert prompt.required_facts == ["Gustave Eiffel", "1887", "1889", "330 metres", "1832"]


def test_pop_culture_multi_subject_category_and_template():
    [single] = write(WriterConfig(multi_hop_share=0.0), IDOL, [])
    assert single.prompt == (
        "Create an illustration of Hatsune Miku in its most recognisable look, with a small text label giving its "
        "correct name and year."
    )
    assert (single.category, single.difficulty) == ("anime", "easy")
    [multi] = write(WriterConfig(multi_hop_share=1.0), IDOL, [ENGINEER])
    assert multi.category == "multi_anime"


def test_no_linked_topics_means_single_hop_and_deterministic():
    first = write(WriterConfig(multi_hop_share=1.0), TOWER, [])
    assert first == write(WriterConfig(multi_hop_share=1.0), TOWER, [])
    assert first[0].hops == 1


def test_fingerprint_matches_config_and_seed_changes_ids():
    assert TemplateWriter().fingerprint == Config().writer_fingerprint()
    chosen = {write(WriterConfig(seed=seed, multi_hop_share=0), TOWER, [])[0].id for seed in range(6)}
    assert len(chosen) == 6


def test_every_group_has_several_families_and_templates_render():
    groups = {}
    for template in load_writer_templates():
        groups.setdefault(template.group, []).append(template.name)
        rendered = template.text.format(title="X", about="", linked_hint="y")
        assert "{" not in rendered and "X" in rendered
    assert {group: len(names) for group, names in groups.items()} == {
        "science_and_knowledge": 3,
        "pop_culture_and_news": 3,
        "multi_hop": 2,
    }


def test_required_facts_kinds():
    text = (
        "Mount Everest rises 8,849 m. Tenzing Norgay and Edmund Hillary climbed it in 1953; 12% of climbers."
    )
    assert required_facts(text, ("Mount Everest",)) == [
        "8,849 m",
        "Tenzing Norgay",
        "Edmund Hillary",
        "1953",
        "12%",
    ]
