"""Issue 10, synthesis side: well-formed trajectories (protocol repairs, empty thinking, no cached
unusable replies, the server's reasoning field), the teacher fingerprint, subject-faithful offline
answers (no stand-in references, prose facts) and the painter's CLIP truncation count."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from schemas.config import Config, LLMConfig, LLMEndpointConfig, TeacherConfig
from schemas.ids import fingerprint
from schemas.protocols import ImageHit, SearchHit, Tools
from schemas.rows import Message, Prompt
from synthesis.episode import ModelReply, run_episode
from synthesis.llm_client import ChatResult, NativeToolCall, Usage
from synthesis.llm_teacher import LLMTeacher, protocol_text, reasoning_text, with_reasoning
from synthesis.response_cache import MemoryResponseCache
from synthesis.scripted_teacher import ScriptedTeacher, names_subject, prompt_subject, prose_sentences
from synthesis.toolbox import Toolbox
from testkit.servers.openai_server import ScriptedOpenAIServer
from testkit.synthesis_fakes import FakeBrowser, FakeDownloader, FakeSearch, MemoryBlobs, fake_tools
from tests.test_llm_teacher import GOOD_ANSWER, IMAGES, PROMPT, SEARCH, answer, call

PROSE = "I think I should search, but here is some prose."


def run(coroutine):
    return asyncio.run(coroutine)


class ListModel:
    """Replies in order; records which replies the episode rejected."""

    def __init__(self, *texts: str):
        self.texts = list(texts)
        self.rejected: list[str] = []

    async def __call__(self, messages: list[Message]) -> ModelReply:
        text = self.texts.pop(0)
        return ModelReply(text=text, discard=lambda: self.rejected.append(text))


def episode(*texts: str):
    model = ListModel(*texts)
    result = run(run_episode(PROMPT, model, Toolbox(fake_tools()), teacher="t", config=TeacherConfig()))
    return result.trajectory, model


# --- protocol repairs and empty thinking -----------------------------------------------------------


def test_a_clean_episode_has_no_repairs_and_no_empty_thinking():
    trajectory, model = episode(SEARCH, IMAGES, GOOD_ANSWER)
    assert trajectory.ending == "answer"
    assert (trajectory.protocol_repairs, trajectory.empty_think_turns, model.rejected) == (0, 0, [])


def test_prose_then_a_valid_turn_is_one_repair_and_the_prose_is_rejected():
    trajectory, model = episode(PROSE, SEARCH, IMAGES, GOOD_ANSWER)
    assert trajectory.ending == "answer"  # it recovered: fine for RL, not an SFT row (10b's filter)
    assert trajectory.protocol_repairs == 1
    assert model.rejected == [PROSE]
    assert trajectory.messages[3].content.startswith("Your last response could not be used: missing <think>")


@pytest.mark.parametrize(
    ("replies", "repairs"),
    [
        ((SEARCH, GOOD_ANSWER, IMAGES, answer({"gen_prompt": "p", "reference_images": []})), 1),
        ((call("weather", {"city": "Paris"}), SEARCH, IMAGES, GOOD_ANSWER), 1),
        ((SEARCH, call("search", {"queries": ["x"], "top_k": 99}), IMAGES, GOOD_ANSWER), 1),
        ((SEARCH, IMAGES, call("image_search", {"query": "Eiffel Tower"}), GOOD_ANSWER), 1),
        ((PROSE, call("fly", {}), SEARCH, IMAGES, GOOD_ANSWER), 2),
    ],
    ids=["answer-before-image-search", "unknown-tool", "bad-arguments", "repeated-query", "two-kinds"],
)
def test_each_correction_message_counts(replies, repairs):
    trajectory, _ = episode(*replies)
    assert trajectory.ending == "answer"
    assert trajectory.protocol_repairs == repairs


def test_empty_think_turns_are_counted():
    empty_search = SEARCH.replace("<think>Next step.</think>", "<think></think>")
    empty_answer = GOOD_ANSWER.replace("<think>I have what I need.</think>", "<think> </think>")
    trajectory, _ = episode(empty_search, IMAGES, empty_answer)
    assert (trajectory.ending, trajectory.empty_think_turns, trajectory.protocol_repairs) == ("answer", 2, 0)


def test_unusable_answer_and_cut_off_reply_are_rejected():
    bad = answer({"gen_prompt": "p", "reference_images": [{"img_id": "IMG_042"}]})
    trajectory, model = episode(SEARCH, IMAGES, bad)
    assert trajectory.ending == "answer_parse_failed" and model.rejected == [bad]

    class CutOff(ListModel):
        async def __call__(self, messages):
            return ModelReply(text="<think>long", truncated=True, discard=lambda: self.rejected.append("cut"))

    cut = CutOff()
    result = run(run_episode(PROMPT, cut, Toolbox(fake_tools()), teacher="t", config=TeacherConfig()))
    assert result.trajectory.ending == "max_response_length_exceeded" and cut.rejected == ["cut"]


# --- the LLM teacher: cache, reasoning field -------------------------------------------------------


@pytest.fixture
def server():
    with ScriptedOpenAIServer() as scripted:
        yield scripted


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", "sk-test-b1")


def llm_teacher(server, cache=None, **options) -> LLMTeacher:
    endpoint = LLMEndpointConfig(
        base_url=server.base_url, model="teacher-vlm", api_key_env="TEACHER_KEY", max_retries=1
    )
    return LLMTeacher(
        endpoint, TeacherConfig(kind="llm", **options), fingerprint="tfp", cache=cache, blobs=BLOBS
    )


BLOBS = MemoryBlobs()  # the teacher reads attached images from the same store the tools write to


def test_prose_is_not_cached_so_a_rerun_asks_again(server):
    cache = MemoryResponseCache()
    server.reply(PROSE, SEARCH, IMAGES, GOOD_ANSWER)
    first = run(llm_teacher(server, cache).run(PROMPT, fake_tools(BLOBS))).trajectory
    assert first.ending == "answer" and first.protocol_repairs == 1
    assert PROSE in [m.content for m in first.messages]
    assert len(server.chat_requests()) == 4 and len(cache) == 3  # the prose was evicted

    # a rerun (a retry, or the same prompt under a fresh teacher) with the same cache: the opening
    # request is asked again and the model now answers properly; the prose is never replayed
    server.reply(SEARCH, IMAGES, GOOD_ANSWER)
    second = run(llm_teacher(server, cache).run(PROMPT, fake_tools(BLOBS))).trajectory
    assert second.ending == "answer" and second.protocol_repairs == 0
    assert PROSE not in [m.content for m in second.messages]
    assert len(server.chat_requests()) == 7 and server.errors == []

    # a third run is served from the cache entirely: the clean episode, no request
    third = run(llm_teacher(server, cache).run(PROMPT, fake_tools(BLOBS))).trajectory
    assert third.messages == second.messages and len(server.chat_requests()) == 7


def completion(message: dict, serial: int = 1) -> dict:
    return {
        "id": f"chatcmpl-{serial}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "teacher-vlm",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def native(name: str, arguments: dict, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def test_native_tool_calling_keeps_the_reasoning_field_as_think(server):
    server.reply(
        completion(  # vLLM/SGLang with a reasoning parser: no content, reasoning_content beside it
            {
                "content": None,
                "reasoning_content": "The plaque needs the exact height, so I search first.",
                "tool_calls": [native("search", {"queries": ["Eiffel Tower height"]}, "c1")],
            }
        ),
        completion(  # newer vLLM / OpenRouter: `reasoning`
            {
                "content": "",
                "reasoning": "Now a reference image of the tower.",
                "tool_calls": [native("image_search", {"query": "Eiffel Tower"}, "c2")],
            }
        ),
        completion({"content": GOOD_ANSWER.split("</think>\n", 1)[1], "reasoning_content": "Done."}),
    )
    trajectory = run(llm_teacher(server, native_tool_calling=True).run(PROMPT, fake_tools(BLOBS)))
    trajectory = trajectory.trajectory
    assistant = [m.content for m in trajectory.messages if m.role == "assistant"]
    assert assistant[0].startswith("<think>The plaque needs the exact height, so I search first.</think>\n")
    assert assistant[1].startswith("<think>Now a reference image of the tower.</think>\n<tool_call>")
    assert assistant[2].startswith("<think>Done.</think>\n<answer>")
    assert (trajectory.ending, trajectory.empty_think_turns, trajectory.protocol_repairs) == ("answer", 0, 0)


def test_native_tool_calling_without_any_reasoning_counts_empty_thinking(server):
    server.reply(
        completion({"content": None, "tool_calls": [native("search", {"queries": ["Eiffel Tower"]}, "c1")]}),
        completion(
            {"content": None, "tool_calls": [native("image_search", {"query": "Eiffel Tower"}, "c2")]}
        ),
        completion({"content": GOOD_ANSWER}),
    )
    trajectory = run(llm_teacher(server, native_tool_calling=True).run(PROMPT, fake_tools(BLOBS)))
    assert trajectory.trajectory.ending == "answer"
    assert trajectory.trajectory.empty_think_turns == 2


def test_reasoning_helpers():
    def result(message: dict) -> ChatResult:
        return ChatResult(content="", finish_reason="stop", usage=Usage(), raw=completion(message))

    assert reasoning_text(result({"content": "x", "reasoning_content": "  why  "})) == "why"
    assert reasoning_text(result({"content": "x", "reasoning": "because"})) == "because"
    assert reasoning_text(result({"content": "x"})) == ""
    assert reasoning_text(ChatResult(content="", finish_reason="", usage=Usage())) == ""
    assert with_reasoning("<answer>{}</answer>", "why") == "<think>why</think>\n<answer>{}</answer>"
    assert with_reasoning("<think>own</think><answer>{}</answer>", "why").startswith("<think>own</think>")
    assert with_reasoning("<answer>{}</answer>", "") == "<answer>{}</answer>"
    calls = [NativeToolCall(id="c", name="search", arguments='{"queries": ["a"]}')]
    assert protocol_text("", calls, "why").startswith("<think>why</think>\n<tool_call>")
    assert protocol_text("Also this.", calls, "why").startswith("<think>why\nAlso this.</think>")


# --- the teacher fingerprint -----------------------------------------------------------------------


def endpoint(model: str) -> LLMEndpointConfig:
    return LLMEndpointConfig(base_url="http://127.0.0.1:9/v1", model=model)


def test_teacher_fingerprint_includes_the_summary_endpoint_only_when_it_shapes_trajectories():
    default = Config()
    assert default.teacher_fingerprint() == fingerprint(  # the formula existing warehouses were built with
        {"teacher": default.teacher, "llm": None, "search": "local"}
    )
    llm = TeacherConfig(kind="llm", browse_summary=True)
    base = Config(teacher=llm, llm=LLMConfig(teacher=endpoint("t")))
    with_summary = Config(teacher=llm, llm=LLMConfig(teacher=endpoint("t"), summary=endpoint("s1")))
    other_summary = Config(teacher=llm, llm=LLMConfig(teacher=endpoint("t"), summary=endpoint("s2")))
    assert base.teacher_fingerprint() == fingerprint(
        {"teacher": llm, "llm": endpoint("t"), "search": "local"}
    )
    fingerprints = {c.teacher_fingerprint() for c in (base, with_summary, other_summary)}
    assert len(fingerprints) == 3
    unused = TeacherConfig(kind="llm", browse_summary=False)
    assert (
        Config(
            teacher=unused, llm=LLMConfig(teacher=endpoint("t"), summary=endpoint("s1"))
        ).teacher_fingerprint()
        == Config(teacher=unused, llm=LLMConfig(teacher=endpoint("t"))).teacher_fingerprint()
    )


# --- the scripted teacher: subject, references, readable facts ---------------------------------------

BANACH = Prompt(
    id="p-banach",
    topic_ids=["t"],
    category="people",
    difficulty="hard",
    prompt="Design a labelled infographic of Stefan Banach (Polish mathematician): an accurate depiction of "
    "him with the year of his major work printed as readable text.",
    writer="w",
)
CORPUS = [
    {
        "title": "Stefan Banach",
        "url": "http://corpus.test/wiki/Stefan_Banach",
        "text": "# Stefan Banach\n\nPolish mathematician (1892–1945)\n\nFrom the People collection\n\n"
        "Stefan Banach was a Polish mathematician who is generally considered one of the 20th century's most "
        "important mathematicians. He was an original member of the Lwów School of Mathematics. His major "
        "work was the 1932 book, Théorie des opérations linéaires.\n\n## See also\n\n- Polish language",
        "images": [],
    },
    {
        "title": "Polish language",
        "url": "http://corpus.test/wiki/Polish_language",
        "text": "Polish is a West Slavic language spoken by 40 million people in Poland and by Polish "
        "mathematicians such as Stefan Banach.",
        "images": [],
    },
]


class CatalogSearch(FakeSearch):
    """Image search over a fixed catalogue with titles, like the offline one: a term overlap."""

    CATALOG = [
        ImageHit(url="http://corpus.test/img/gravel.png", title="Gravel, small crumbled stones, texture"),
        ImageHit(url="http://corpus.test/img/banach.png", title="Stefan Banach in 1930, portrait photograph"),
    ]

    def __init__(self, documents, catalog):
        super().__init__(documents)
        self.catalog = catalog

    async def image_search(self, query: str, top_k: int) -> list[ImageHit]:
        words = set(query.lower().split())
        return [hit for hit in self.catalog if words & set(hit.title.lower().replace(",", "").split())][
            :top_k
        ]

    async def search(self, query: str, top_k: int) -> list[SearchHit]:
        hits = await super().search(query, top_k)
        return sorted(hits, key=lambda hit: hit.title != "Polish language")  # the neighbour ranks first


def scripted(catalog) -> object:
    blobs = MemoryBlobs()
    tools = Tools(
        search=CatalogSearch(CORPUS, catalog), browser=FakeBrowser(CORPUS), images=FakeDownloader(blobs)
    )
    return run(ScriptedTeacher().run(BANACH, tools)).trajectory


def test_scripted_answer_is_about_the_subject_in_plain_sentences():
    trajectory = scripted(CatalogSearch.CATALOG)
    assert trajectory.ending == "answer"
    browse = json.loads([c for c in trajectory.tool_calls if c.name == "browse"][0].arguments_json)
    assert browse["url"] == "http://corpus.test/wiki/Stefan_Banach"  # not the neighbouring top hit
    assert trajectory.gen_prompt == (
        BANACH.prompt
        + " Stefan Banach was a Polish mathematician who is generally considered one of the 20th "
        "century's most important mathematicians. His major work was the 1932 book, Théorie des opérations "
        "linéaires. Depict Stefan Banach as in the first reference image."
    )
    for residue in ("#", "From the People collection", "See also", "(1892–1945)"):
        assert residue not in trajectory.gen_prompt
    titles = {r.img_id: r.title for r in trajectory.references}
    assert [titles[c.img_id] for c in trajectory.chosen_references] == [
        "Stefan Banach in 1930, portrait photograph"
    ]


def test_scripted_teacher_chooses_no_reference_when_no_image_shows_the_subject():
    gravel_only = [
        CatalogSearch.CATALOG[0],
        ImageHit(url="http://corpus.test/img/s.png", title="Stefan Zweig"),
    ]
    trajectory = scripted(gravel_only)
    assert trajectory.ending == "answer" and trajectory.chosen_references == []
    assert "reference image" not in trajectory.gen_prompt
    assert "no returned image shows them" in trajectory.messages[-1].content


def test_subject_and_prose_helpers():
    assert prompt_subject(BANACH.prompt) == "Stefan Banach"
    assert (
        prompt_subject("Create an illustration of Japanese art in its most recognisable look.")
        == "Japanese art"
    )
    assert prompt_subject("Design a poster showing History of aviation together with the engineer.") == (
        "History of aviation"
    )
    assert prompt_subject("Draw the year of it with a caption.") == ""
    assert names_subject("Surface of the Moon with craters", "Moon")
    assert names_subject("Hubble Deep Field: the Hubble Space Telescope's field", "Hubble Space Telescope")
    assert not names_subject("Gravel, small crumbled stones, texture", "Stefan Banach")
    assert not names_subject("Stefan Zweig", "Stefan Banach")
    assert names_subject("A harrow in a field", "Harrow (tool)")
    assert prose_sentences(
        "Yang Chen-Ning also known as C.N. Yang is a physicist. He met T. E. Lawrence in St. Ives in 1926."
    ) == [
        "Yang Chen-Ning also known as C.N. Yang is a physicist.",
        "He met T. E. Lawrence in St. Ives in 1926.",
    ]
    assert prose_sentences(CORPUS[0]["text"]) == [
        "Stefan Banach was a Polish mathematician who is generally considered one of the 20th century's most "
        "important mathematicians.",
        "He was an original member of the Lwów School of Mathematics.",
        "His major work was the 1932 book, Théorie des opérations linéaires.",
    ]


# --- the painter: text-to-image fallback, truncation count -----------------------------------------


class RecordingPipeline:
    """Stands in for a diffusers pipeline: an edit pipeline when `edit`, else text-to-image."""

    def __init__(self):
        self.calls: list[dict] = []

    def _paint(self, prompt, width, height, **rest):
        from PIL import Image

        self.calls.append({"prompt": prompt, **rest})
        return type(
            "Output", (), {"images": [Image.new("RGB", (width, height), (9, 9, 9)) for _ in prompt]}
        )()


class EditPipeline(RecordingPipeline):
    def __call__(self, image=None, prompt=None, num_inference_steps=1, guidance_scale=1.0, generator=None,
                 height=None, width=None):  # fmt: skip
        return self._paint(prompt, width, height, image=image)


class TextPipeline(RecordingPipeline):
    def __call__(self, prompt=None, num_inference_steps=1, guidance_scale=1.0, generator=None, height=None,
                 width=None):  # fmt: skip
        return self._paint(prompt, width, height)


def test_an_edit_pipeline_paints_rows_without_references_text_to_image():
    from schemas.config import PainterConfig
    from synthesis.painter import DiffusersPainter
    from testkit.synthesis_fakes import png_for
    from tests.test_synthesis_painter import request

    blobs = MemoryBlobs()
    red = blobs.put(png_for("red", 64))
    edit, text = EditPipeline(), TextPipeline()
    config = PainterConfig(pipeline="edit", model="org/edit", width=32, height=32)
    painter = DiffusersPainter(config, "org/edit", blobs=blobs, pipeline=edit, text_pipeline=text)
    images, errors = painter.paint([request(0, [red]), request(1)])
    assert errors == [] and [i.trajectory_id for i in images] == ["trajectory-0", "trajectory-1"]
    assert [c["prompt"] for c in edit.calls] == [["a museum poster number 0"]]
    assert [c["prompt"] for c in text.calls] == [["a museum poster number 1"]]
    assert all(i.prompt_tokens_truncated == 0 for i in images)  # stand-ins have no tokenizer


@pytest.mark.slow
def test_tiny_painter_counts_truncated_tokens_and_warns_once(tmp_path, caplog):
    import os

    from schemas.config import PainterConfig
    from synthesis.painter import DiffusersPainter, truncated_tokens
    from synthesis.tiny_pipeline import build_tiny_pipeline
    from tests.test_synthesis_painter import request

    os.environ["HF_HUB_OFFLINE"] = "1"
    model = build_tiny_pipeline(tmp_path / "tiny-sd")
    painter = DiffusersPainter(PainterConfig(), model, blobs=MemoryBlobs())
    long_prompt = "A labelled infographic of Stefan Banach, with the year 1932 printed as readable text. " * 3
    tokenizer = painter._load().tokenizer
    expected = len(tokenizer(long_prompt)["input_ids"]) - tokenizer.model_max_length
    assert expected > 0 and truncated_tokens(painter._load(), long_prompt) == expected
    with caplog.at_level(logging.WARNING):
        first, _ = painter.paint([request(0, gen_prompt=long_prompt), request(1, gen_prompt="a cat")])
        second, _ = painter.paint([request(2, gen_prompt=long_prompt + " Twice.")])
    assert [i.prompt_tokens_truncated for i in first] == [expected, 0]
    assert second[0].prompt_tokens_truncated > expected
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w for w in warnings if "prompt_tokens_truncated" in w] == [
        "1 of 2 gen_prompts in this batch are longer than the painter's text encoder takes (up to "
        f"{expected} tokens cut); the text beyond the limit is not painted. Counted per image in "
        "images.prompt_tokens_truncated; this warning is shown once per run."
    ]
    assert not [w for w in warnings if "can only handle sequences up to" in w]


def test_run_summary_line_counts_truncated_ground_truths(tmp_path):
    from flows.painter_summary import truncation_note
    from schemas.rows import Image
    from warehouse.store import Warehouse

    def image(index: int, cut: int, painter: str = "a1b2") -> Image:
        return Image(
            id=f"i{index}",
            kind="ground_truth",
            sha256=f"{index:064x}",
            width=64,
            height=64,
            format="PNG",
            phash="0" * 16,
            trajectory_id=f"t{index}",
            painter=painter,
            prompt_tokens_truncated=cut,
        )

    database = tmp_path / "warehouse.duckdb"
    with Warehouse(database) as warehouse:
        warehouse.insert([image(1, 0), image(2, 12), image(3, 40), image(4, 99, painter="other")])
    assert truncation_note(database, "a1b2") == (
        "painter: 2 of 3 ground-truth images were painted from a gen_prompt cut by the text encoder's length "
        "limit (up to 40 tokens dropped; per image in images.prompt_tokens_truncated)"
    )
    assert truncation_note(database, "ffff") == ""  # nothing painted by this painter
    assert truncation_note(database, "x' OR 1=1 --") == ""
