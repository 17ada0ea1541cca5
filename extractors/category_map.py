"""Map a Wikipedia vital article (topic label + short description) to a Gen-Searcher category.

A pure, table-driven function: For People (and Uncategorized, which holds many people), the
occupation rules come first and the occupation named earliest in the description wins. Then the
other `RULES` are checked top to bottom: the first rule whose source topics include the article's
topic and whose keywords occur as whole words in the description wins (some topics only accept the
categories in `TOPIC_FIRST`); otherwise the topic's default applies. Articles
without a description are matched on their title and the first sentence of their extract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.categories import CATEGORIES

PEOPLE = "People"
ARTS = "Arts"
BIOLOGY = "Biology and health sciences"
EVERYDAY = "Everyday life"
GEOGRAPHY = "Geography"
HISTORY = "History"
MATHEMATICS = "Mathematics"
RELIGION = "Philosophy and religion"
PHYSICAL = "Physical sciences"
SOCIETY = "Society and social sciences"
TECHNOLOGY = "Technology"
UNCATEGORIZED = "Uncategorized"

WIKIPEDIA_TOPICS: tuple[str, ...] = (
    ARTS,
    BIOLOGY,
    EVERYDAY,
    GEOGRAPHY,
    HISTORY,
    MATHEMATICS,
    PEOPLE,
    RELIGION,
    PHYSICAL,
    SOCIETY,
    TECHNOLOGY,
    UNCATEGORIZED,
)

ANY: frozenset[str] = frozenset()  # a rule for every topic


@dataclass(frozen=True)
class Rule:
    topics: frozenset[str]  # empty = any topic
    keywords: tuple[str, ...]  # whole words or phrases, lower case
    category: str

    def pattern(self) -> re.Pattern[str]:
        alternatives = "|".join(
            re.escape(keyword) for keyword in sorted(self.keywords, key=len, reverse=True)
        )
        return re.compile(rf"\b(?:{alternatives})\b")


def _rule(topics: tuple[str, ...], keywords: str, category: str) -> Rule:
    return Rule(frozenset(topics), tuple(k.strip() for k in keywords.split(",") if k.strip()), category)


_NOT_PEOPLE = tuple(topic for topic in WIKIPEDIA_TOPICS if topic != PEOPLE)
# Occupation rules: People, and Uncategorized (which holds many famous people, e.g. Albert Einstein).
PERSON_TOPICS = (PEOPLE, UNCATEGORIZED)

RULES: tuple[Rule, ...] = (
    # --- people: by occupation; the occupation named first in the description wins ---------------
    _rule(
        PERSON_TOPICS,
        "footballer, athlete, sprinter, boxer, wrestler, tennis player, basketball player, cricketer, "
        "swimmer, gymnast, cyclist, racing driver, golfer, baseball player, ice hockey player, "
        "chess player, chess grandmaster, skier, skater, figure skater, runner, player, martial artist, "
        "olympic, olympian, sportsman, sportswoman",
        "sports",
    ),
    _rule(
        PERSON_TOPICS,
        "actor, actress, singer, rapper, comedian, entertainer, television host, model, dancer, "
        "musician, songwriter, singer-songwriter, pop star, guitarist, drummer, pianist, band",
        "celebrities",
    ),
    _rule(
        PERSON_TOPICS, "filmmaker, film director, director, screenwriter, animator, cinematographer", "film"
    ),
    _rule(PERSON_TOPICS, "manga artist, mangaka, anime director", "anime"),
    _rule(PERSON_TOPICS, "video game designer, game designer", "game"),
    _rule(PERSON_TOPICS, "painter, sculptor, artist, printmaker, illustrator, photographer", "art"),
    _rule(PERSON_TOPICS, "architect", "architecture"),
    _rule(PERSON_TOPICS, "astronomer, astrophysicist, cosmologist, astronaut, cosmonaut", "astronomy"),
    _rule(PERSON_TOPICS, "chemist, biochemist", "chemistry"),
    _rule(PERSON_TOPICS, "physicist, mathematician, logician, statistician", "physics"),
    _rule(
        PERSON_TOPICS,
        "biologist, naturalist, botanist, zoologist, geneticist, microbiologist, ecologist, primatologist, "
        "agronomist",
        "biology",
    ),
    _rule(PERSON_TOPICS, "physician, surgeon, nurse, psychiatrist, physiologist, pharmacologist", "medicine"),
    _rule(PERSON_TOPICS, "engineer, inventor, computer scientist, aviator, aviation pioneer", "engineering"),
    _rule(
        PERSON_TOPICS,
        "businessman, businesswoman, industrialist, entrepreneur, magnate, investor, economist",
        "industry",
    ),
    _rule(PERSON_TOPICS, "explorer, navigator, geographer, cartographer", "geography"),
    _rule(
        PERSON_TOPICS,
        "philosopher, theologian, pope, saint, prophet, religious leader, guru, mystic, bishop, "
        "missionary, reformer, founder of",
        "religion",
    ),
    _rule(
        PERSON_TOPICS,
        "president, prime minister, politician, statesman, stateswoman, activist, revolutionary, "
        "chancellor, diplomat, lawyer, dictator, first lady, minister, senator, leader",
        "politics",
    ),
    _rule(
        PERSON_TOPICS,
        "king, queen, emperor, empress, pharaoh, sultan, tsar, caesar, khan, monarch, ruler, general, "
        "military, conqueror, warlord, admiral, commander, prince, princess, caliph, shah",
        "history",
    ),
    _rule(
        PERSON_TOPICS,
        "writer, poet, novelist, playwright, author, composer, historian, scholar, journalist, "
        "linguist, sociologist, psychologist, anthropologist, educator, critic, essayist, polymath",
        "culture",
    ),
    # --- pop culture, before the generic arts rules -----------------------------------------------
    _rule(_NOT_PEOPLE, "video game, video games, video game series, arcade game, game console", "game"),
    _rule(_NOT_PEOPLE, "anime, manga", "anime"),
    _rule(_NOT_PEOPLE, "film, films, movie, cinema, film series, animated film", "film"),
    _rule(_NOT_PEOPLE, "poster, posters, billboard", "posters"),
    # --- sports ----------------------------------------------------------------------------------
    _rule(
        _NOT_PEOPLE,
        "sport, sports, team sport, ball game, olympic games, olympics, football, league, tournament, "
        "championship, cup, martial art, racing, athletics",
        "sports",
    ),
    # --- sky and matter --------------------------------------------------------------------------
    _rule(
        _NOT_PEOPLE,
        "star, stars, planet, planets, dwarf planet, galaxy, galaxies, constellation, nebula, comet, "
        "asteroid, moon, natural satellite, celestial, astronomical, solar system, supernova, "
        "black hole, exoplanet, space telescope, spacecraft, space station, spaceflight, cosmology, "
        "universe",
        "astronomy",
    ),
    _rule(
        _NOT_PEOPLE,
        "chemical element, chemical compound, chemical, element, compound, acid, molecule, molecules, "
        "isotope, alloy, chemistry, organic compound, salt, ion, polymer",
        "chemistry",
    ),
    # --- buildings -------------------------------------------------------------------------------
    _rule(
        _NOT_PEOPLE,
        "building, buildings, architectural, architecture, cathedral, church building, temple, mosque, "
        "palace, castle, tower, skyscraper, bridge, monument, mausoleum, pyramid, dam, stadium, "
        "fortification, wall, amphitheatre",
        "architecture",
    ),
    # --- health ----------------------------------------------------------------------------------
    _rule(
        _NOT_PEOPLE,
        "disease, diseases, disorder, infection, infectious, syndrome, medical, medicine, medication, "
        "drug, vaccine, surgery, surgical, therapy, health, pathogen, virus, cancer, symptom, pain, "
        "psychiatric, mental",
        "medicine",
    ),
    # --- art -------------------------------------------------------------------------------------
    _rule(
        _NOT_PEOPLE,
        "painting, paintings, sculpture, fresco, mural, art movement, art, artwork, museum, "
        "visual art, ceramics, pottery, photography",
        "art",
    ),
    # --- society -----------------------------------------------------------------------------------
    _rule(
        _NOT_PEOPLE,
        "political, politics, government, election, party, law, legal, constitution, state, "
        "ideology, parliament, rights, treaty, international organization, diplomacy",
        "politics",
    ),
    _rule(
        _NOT_PEOPLE,
        "company, corporation, industry, industrial, manufacturing, business, economic, economy, "
        "trade, mining, agriculture, agricultural, market, goods, currency, money",
        "industry",
    ),
    _rule(
        _NOT_PEOPLE,
        "religion, religious, deity, god, goddess, church, christian, islamic, buddhist, hindu, "
        "jewish, mythology, mythological, theology, worship, saint, sect, denomination",
        "religion",
    ),
    _rule(
        _NOT_PEOPLE,
        "war, battle, empire, dynasty, kingdom, ancient, civilization, revolution, period, era, "
        "conflict, historical",
        "history",
    ),
    _rule(
        _NOT_PEOPLE,
        "city, country, capital, river, lake, island, mountain, ocean, sea, region, continent, desert, "
        "province, peninsula, archipelago, volcano, rock, mineral, earth",
        "geography",
    ),
    _rule(
        _NOT_PEOPLE,
        "device, machine, vehicle, aircraft, engine, tool, weapon, computer, electronic, technology, "
        "engineering, material",
        "engineering",
    ),
    _rule(
        _NOT_PEOPLE,
        "species, genus, family of, order of, plant, plants, animal, animals, mammal, bird, fish, "
        "insect, organism, organisms, cell, tissue, organ, protein, gene, biological",
        "biology",
    ),
    _rule(
        _NOT_PEOPLE,
        "force, energy, particle, radiation, physical quantity, unit, wave, physics, light",
        "physics",
    ),
)

TOPIC_DEFAULTS: dict[str, str] = {
    ARTS: "art",
    BIOLOGY: "biology",
    EVERYDAY: "culture",
    GEOGRAPHY: "geography",
    HISTORY: "history",
    MATHEMATICS: "physics",
    PEOPLE: "history",
    RELIGION: "religion",
    PHYSICAL: "physics",
    SOCIETY: "culture",
    TECHNOLOGY: "engineering",
    UNCATEGORIZED: "culture",
}
FALLBACK_CATEGORY = "culture"

# Topics whose own label outranks the generic keyword rules (their default is already specific).
TOPIC_FIRST: dict[str, frozenset[str]] = {
    # A Geography article about a "city with a cathedral" is still geography; only buildings and
    # explicit pop-culture / sports matches move it.
    GEOGRAPHY: frozenset({"architecture", "sports", "film", "game", "anime", "astronomy"}),
    HISTORY: frozenset({"architecture", "sports", "film", "game", "anime", "religion", "art"}),
    BIOLOGY: frozenset({"medicine", "chemistry"}),
    MATHEMATICS: frozenset(),
    RELIGION: frozenset({"architecture", "art", "film", "game", "anime"}),
}

_PERSON_RULES = sum(1 for rule in RULES if rule.topics == frozenset(PERSON_TOPICS))
assert all(rule.topics == frozenset(PERSON_TOPICS) for rule in RULES[:_PERSON_RULES])
_COMPILED: tuple[tuple[Rule, re.Pattern[str]], ...] = tuple((rule, rule.pattern()) for rule in RULES)
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)", re.DOTALL)

assert all(rule.category in CATEGORIES for rule in RULES)
assert all(category in CATEGORIES for category in TOPIC_DEFAULTS.values())


def map_category(source_category: str, title: str, description: str, extract: str) -> str:
    """The Gen-Searcher category of a Wikipedia article (see the module doc for the rules)."""
    text = description.strip()
    if not text:
        match = _FIRST_SENTENCE.match(extract.strip())
        first_sentence = match.group(1) if match else extract[:200]
        text = f"{title}. {first_sentence}"
    text = text.lower()
    allowed = TOPIC_FIRST.get(source_category)
    if source_category in PERSON_TOPICS:  # occupations: the first one named wins ("physicist and chemist")
        earliest: tuple[int, int, str] | None = None
        for number, (rule, pattern) in enumerate(_COMPILED[:_PERSON_RULES]):
            match = pattern.search(text)
            if match and (earliest is None or (match.start(), number) < earliest[:2]):
                earliest = (match.start(), number, rule.category)
        if earliest is not None:
            return earliest[2]
    for rule, pattern in _COMPILED[_PERSON_RULES:]:
        if rule.topics and source_category not in rule.topics:
            continue
        if allowed is not None and rule.category not in allowed:
            continue
        if pattern.search(text):
            return rule.category
    return TOPIC_DEFAULTS.get(source_category, FALLBACK_CATEGORY)
