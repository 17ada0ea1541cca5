"""The Gen-Searcher protocol's pure functions: prompts, turn and answer parsing, tool responses."""

from __future__ import annotations

import json

import pytest

from schemas.errors import ModelOutputError
from schemas.protocols import SearchHit
from synthesis.agent_protocol import (
    ImageRegistry,
    ImageResultEntry,
    final_answer_message,
    format_browse_result,
    format_error_message,
    format_image_results,
    format_search_results,
    format_tool_error,
    parse_answer,
    parse_model_turn,
    system_prompt,
)


def test_system_prompt_date_tools_and_rules():
    text = system_prompt("2026-11-25")
    lines = text.splitlines()
    assert lines[0].startswith("You are a research assistant for an image generator.")
    assert "Today's date is 2026-11-25." in lines
    tools = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0].splitlines()
    assert [json.loads(line)["function"]["name"] for line in tools] == ["search", "image_search", "browse"]
    search = json.loads(tools[0])["function"]["parameters"]
    assert search["properties"]["top_k"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
        "description": "results per query",
    }
    assert search["required"] == ["queries"]
    assert json.loads(tools[2])["function"]["parameters"]["required"] == ["url", "query"]
    assert "- Use at most 8 tool calls and 9 responses in total." in lines
    assert "- Call image_search at least once, one image search per distinct subject." in lines
    assert "$" not in text
    assert (
        "- Use at most 3 tool calls and 4 responses in total."
        in system_prompt("2026-01-02", max_model_calls=4, max_tool_calls=3).splitlines()
    )


def test_system_prompt_refuses_a_bad_date():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        system_prompt("25/11/2026")


def test_final_and_format_error_messages_exact():
    assert final_answer_message() == (
        "You have used your tool budget. Do not call any more tools. Respond now with <think>...</think> followed "
        'by your final <answer>{"gen_prompt": ..., "reference_images": [...]}</answer>, using only the information '
        "and images you already have."
    )
    assert format_error_message("no <tool_call> or <answer>") == (
        "Your last response could not be used: no <tool_call> or <answer>. Respond with <think>...</think> followed "
        "by exactly one <tool_call>{...}</tool_call> or one <answer>{...}</answer>."
    )


def test_parse_tool_call_turn():
    turn = parse_model_turn(
        ' <think>Need facts.</think>\n<tool_call>{"name": "search", "arguments": {"queries": ["a b"], "top_k": 3}}'
        "</tool_call>\n"
    )
    assert turn.ok and turn.think == "Need facts." and turn.answer_json is None
    assert turn.tool_call.name == "search"
    assert turn.tool_call.arguments == {"queries": ["a b"], "top_k": 3}
    assert turn.tool_call.arguments_json == '{"queries": ["a b"], "top_k": 3}'


def test_parse_answer_turn_and_string_arguments():
    turn = parse_model_turn('<think>Done.</think><answer>{"gen_prompt": "x"}</answer>')
    assert turn.ok and turn.answer_json == '{"gen_prompt": "x"}' and turn.tool_call is None
    turn = parse_model_turn(
        '<think></think><tool_call>{"name": "browse", "arguments": "{\\"url\\": \\"u\\"}"}</tool_call>'
    )
    assert turn.tool_call.arguments == {"url": "u"}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("just text", "missing <think> block at the start"),
        ("<think>a</think>", "no <tool_call> or <answer>"),
        ("<think>a</think><answer>{}</answer><answer>{}</answer>", "more than one <tool_call>/<answer>; give exactly one"),
        ('<think>a</think><tool_call>{"name":"search","arguments":{}}</tool_call><answer>{}</answer>',
         "more than one <tool_call>/<answer>; give exactly one"),
        ("<think>a</think><answer>{}", "unbalanced <answer> tag"),
        ("<think>a</think><answer>{}</answer> and more", "text after </answer>"),
        ("hello <think>a</think><answer>{}</answer>", "text before <think>"),
        ("<think>a</think><think>b</think><answer>{}</answer>", "more than one <think> block"),
    ],
)  # fmt: skip
def test_parse_invalid_turns(text, error):
    assert parse_model_turn(text).error == error


@pytest.mark.parametrize(
    ("body", "name", "error"),
    [
        ("{not json", "", "tool_call is not valid JSON (Expecting property name enclosed in double quotes)"),
        ("[1]", "", "tool_call must be a JSON object with name and arguments"),
        ('{"arguments": {}}', "", "tool_call has no tool name"),
        ('{"name": "search", "arguments": [1]}', "search", "tool_call arguments must be a JSON object"),
    ],
)
def test_malformed_tool_calls_are_kept_for_a_tool_error(body, name, error):
    turn = parse_model_turn(f"<think>x</think><tool_call>{body}</tool_call>")
    assert turn.ok  # a protocol turn; the toolbox answers it with a ToolError
    assert (turn.tool_call.name, turn.tool_call.arguments, turn.tool_call.error) == (name, None, error)


def test_parse_answer_sorts_deduplicates_and_validates():
    answer = parse_answer(
        json.dumps(
            {
                "gen_prompt": " A poster of the tower as in the first reference image. ",
                "reference_images": [
                    {"img_id": "IMG_003", "note": "engineer"},
                    {"img_id": "IMG_001", "note": "tower"},
                    {"img_id": "IMG_003", "note": "again"},
                ],
            }
        ),
        ["IMG_001", "IMG_002", "IMG_003"],
    )
    assert answer.gen_prompt == "A poster of the tower as in the first reference image."
    assert [(c.img_id, c.note) for c in answer.chosen] == [("IMG_001", "tower"), ("IMG_003", "engineer")]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("nope", "answer is not valid JSON"),
        ("[]", "answer must be a JSON object"),
        ('{"reference_images": []}', "answer has no gen_prompt string"),
        ('{"gen_prompt": "see https://x.org/a", "reference_images": []}', "gen_prompt contains a URL"),
        ('{"gen_prompt": "see en.wikipedia.org", "reference_images": []}', "gen_prompt contains a URL"),
        ('{"gen_prompt": "like IMG_001", "reference_images": []}', "gen_prompt contains an image id"),
        ('{"gen_prompt": "p"}', "answer has no reference_images list"),
        ('{"gen_prompt": "p", "reference_images": [{"img_id": "IMG_009"}]}', "unknown image id 'IMG_009'"),
        ('{"gen_prompt": "p", "reference_images": ["IMG_001"]}', "each reference image must be an object"),
    ],
)
def test_parse_answer_failures(answer, message):
    with pytest.raises(ModelOutputError, match=message.replace("(", r"\(")):
        parse_answer(answer, {"IMG_001"})


def test_parse_answer_with_no_reference_is_a_text_to_image_answer():
    answer = parse_answer('{"gen_prompt": "A portrait of Stefan Banach.", "reference_images": []}', set())
    assert (answer.gen_prompt, answer.chosen) == ("A portrait of Stefan Banach.", [])


def test_parse_answer_more_than_five():
    ids = [f"IMG_{i:03d}" for i in range(1, 7)]
    answer = json.dumps({"gen_prompt": "p", "reference_images": [{"img_id": i} for i in ids]})
    with pytest.raises(ModelOutputError, match="got 6"):
        parse_answer(answer, ids)


def test_image_registry_keeps_ids_for_repeated_images():
    registry = ImageRegistry()
    first, new_first = registry.register("a" * 64, url="u1", title="t1")
    second, _ = registry.register("b" * 64, url="u2")
    again, new_again = registry.register("a" * 64, url="u3")
    assert (first.img_id, second.img_id, again.img_id) == ("IMG_001", "IMG_002", "IMG_001")
    assert (new_first, new_again) == (True, False) and again.url == "u1"
    assert registry.ids == ["IMG_001", "IMG_002"]


def test_format_search_results_exact():
    text = format_search_results(
        [
            (
                "Eiffel  Tower",
                [SearchHit(title="Eiffel [tower]", url="http://a.test/1", snippet="Iron\n tower.")],
            ),
            ("nothing", []),
        ],
        ['Skipped "x": this query was already used.'],
    )
    assert text == (
        "<tool_response>\n"
        '### Results for "Eiffel Tower"\n'
        "[Eiffel (tower)](http://a.test/1) Iron tower.\n"
        "\n"
        '### Results for "nothing"\n'
        "No results.\n"
        "\n"
        'Skipped "x": this query was already used.\n'
        "</tool_response>"
    )


def test_format_image_results_exact():
    registry = ImageRegistry()
    a, _ = registry.register(
        "a" * 64, url="http://i.test/a.png", title="Tower", page_url="http://p.test/", width=4, height=3
    )
    b, _ = registry.register("b" * 64, url="http://i.test/b.png")
    text, attached = format_image_results(
        "tower",
        [
            ImageResultEntry(a, "blobs/aa/" + "a" * 64, False),
            ImageResultEntry(b, "blobs/bb/" + "b" * 64, True),
        ],
        ["Skipped an image that could not be used (http://i.test/c.png): broken"],
    )
    assert attached == ["IMG_002"]
    assert text == (
        "<tool_response>\n"
        '### Images for "tower"\n'
        "IMG_001: Tower (already shown earlier)\n"
        "url: http://i.test/a.png\n"
        f"local path: blobs/aa/{'a' * 64}\n"
        "source page: http://p.test/\n"
        "size: 4x3\n"
        "\n"
        "IMG_002: untitled\n"
        "url: http://i.test/b.png\n"
        f"local path: blobs/bb/{'b' * 64}\n"
        "source page: unknown\n"
        "size: 0x0\n"
        "<image>\n"
        "\n"
        "Skipped an image that could not be used (http://i.test/c.png): broken\n"
        "</tool_response>"
    )


def test_format_browse_and_errors_exact():
    assert format_browse_result("http://a.test/", "height", "330 metres.") == (
        '<tool_response>\n### Content of http://a.test/ relevant to "height"\n330 metres.\n</tool_response>'
    )
    assert format_browse_result("http://a.test/", "height", " ") == (
        '<tool_response>\nThe page http://a.test/ has no content relevant to "height".\n</tool_response>'
    )
    assert (
        format_tool_error("unknown tool 'x'")
        == "<tool_response>\nToolError: unknown tool 'x'\n</tool_response>"
    )
