"""One teacher episode: the model-agnostic loop of the Gen-Searcher protocol.

`run_episode` owns the budget, the endings and the message list; the model is any async function
from messages to a reply (the scripted policy, an OpenAI-compatible client). Every reply goes through
`parse_model_turn` and `parse_answer`, whoever wrote it.

Endings: `answer`; `answer_parse_failed` (the <answer> is unusable); `no_answer` (budget spent, or a
tool call after the final message); `repeated_response` (a reply identical to an earlier one, or a
second call rejected for repeating a query); `max_response_length_exceeded` (the reply was cut off);
`error` (a second reply that is not a protocol turn). A failing model call (ModelCallError) is not an
ending: it propagates so the flow records a retryable failure for the row.

Well-formedness, recorded on the trajectory for curation: `protocol_repairs` counts the correction
messages the episode needed (a reply that is not a protocol turn, an answer before any image_search,
a tool call rejected with a ToolError for the model's own mistake: unknown tool, bad arguments, a
repeated query); `empty_think_turns` counts protocol turns whose <think> block is empty. A reply the
episode could not use is `reject()`ed, so the teacher's response cache never replays it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from schemas.config import TeacherConfig
from schemas.errors import ModelOutputError
from schemas.ids import content_id
from schemas.protocols import TeacherResult
from schemas.rows import Ending, Image, Message, Prompt, ToolCall, Trajectory
from synthesis.agent_protocol import (
    final_answer_message,
    format_error_message,
    opening_messages,
    parse_answer,
    parse_model_turn,
)
from synthesis.toolbox import EpisodeMemory, Toolbox

IMAGE_SEARCH_REQUIRED = (
    "You have not called image_search yet. Call image_search at least once (one search per subject) "
    "before you answer."
)


@dataclass(frozen=True)
class ModelReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: bool = False  # the response hit the length limit (finish_reason "length")
    # called when the episode could not use this reply (not a protocol turn, cut off, unusable answer),
    # so a response cache forgets it and a rerun asks the model again instead of replaying it
    discard: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def reject(self) -> None:
        if self.discard is not None:
            self.discard()


Model = Callable[[list[Message]], Awaitable[ModelReply]]


def trajectory_id(prompt_id: str, teacher_fingerprint: str) -> str:
    return content_id(prompt_id, teacher_fingerprint)


def _append_user(messages: list[Message], text: str) -> None:
    """Add a user instruction, merged into a trailing user turn so roles keep alternating (sharegpt)."""
    if messages and messages[-1].role == "user":
        last = messages[-1]
        messages[-1] = Message(role="user", content=f"{last.content}\n\n{text}", image_ids=last.image_ids)
    else:
        messages.append(Message(role="user", content=text))


async def run_episode(
    prompt: Prompt, model: Model, toolbox: Toolbox, *, teacher: str, config: TeacherConfig
) -> TeacherResult:
    messages = opening_messages(prompt.prompt, config)
    memory = EpisodeMemory()
    tool_calls: list[ToolCall] = []
    images: list[Image] = []
    seen_replies: set[str] = set()
    model_calls = prompt_tokens = completion_tokens = format_errors = repeats = 0
    repairs = empty_thinks = 0
    forced = image_searched = False
    ending: Ending = "no_answer"
    gen_prompt, chosen = "", []

    while model_calls < config.max_model_calls:
        if not forced and (
            model_calls >= config.max_model_calls - 1 or len(tool_calls) >= config.max_tool_calls
        ):
            _append_user(messages, final_answer_message())
            forced = True
        reply = await model(list(messages))
        model_calls += 1
        prompt_tokens += reply.prompt_tokens
        completion_tokens += reply.completion_tokens
        text = reply.text.strip()
        messages.append(Message(role="assistant", content=text))
        if reply.truncated:
            reply.reject()
            ending = "max_response_length_exceeded"
            break
        if text in seen_replies:
            ending = "repeated_response"
            break
        seen_replies.add(text)
        turn = parse_model_turn(text)
        if not turn.ok:
            reply.reject()
            format_errors += 1
            if forced or format_errors >= 2:
                ending = "no_answer" if forced else "error"
                break
            _append_user(messages, format_error_message(turn.error))
            repairs += 1
            continue
        if not turn.think.strip():
            empty_thinks += 1
        if turn.answer_json is not None:
            if not image_searched and not forced:
                _append_user(messages, IMAGE_SEARCH_REQUIRED)
                repairs += 1
                continue
            try:
                answer = parse_answer(turn.answer_json, memory.registry.ids)
            except ModelOutputError:
                reply.reject()
                ending = "answer_parse_failed"
                break
            ending, gen_prompt, chosen = "answer", answer.gen_prompt, answer.chosen
            break
        if forced:  # a tool call after tools were forbidden
            ending = "no_answer"
            break
        assert turn.tool_call is not None  # a valid turn without an answer is a tool call
        outcome = await toolbox.execute(turn.tool_call, model_calls, memory)
        tool_calls.append(outcome.record)
        repairs += outcome.rejected  # the call itself broke a rule: its ToolError response corrects it
        messages.append(outcome.message)
        images.extend(outcome.new_images)
        image_searched = image_searched or (outcome.record.name == "image_search" and outcome.record.ok)
        if outcome.repeated:
            repeats += 1
            if repeats >= 2:
                ending = "repeated_response"
                break

    trajectory = Trajectory(
        id=trajectory_id(prompt.id, teacher),
        prompt_id=prompt.id,
        teacher=teacher,
        messages=messages,
        tool_calls=tool_calls,
        references=memory.registry.references,
        ending=ending,
        gen_prompt=gen_prompt,
        chosen_references=chosen,
        model_calls=model_calls,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        protocol_repairs=repairs,
        empty_think_turns=empty_thinks,
    )
    return TeacherResult(trajectory=trajectory, reference_images=images)
