"""A request-dependent policy for `ScriptedOpenAIServer`: one server plays every LLM role of a run.

`CompetentPolicy` recognises a request by its system prompt (writer, teacher, judge, browse summary)
and answers like a competent model:

- writer: valid JSON for the writer's schema, one prompt per requested task, built on the topic
  title it was given (so the local search finds the article);
- teacher: `<think>` + `<tool_call>` search -> browse (the first URL the search returned) ->
  image_search -> `<answer>` choosing the IMG ids listed in the last image_search response; a
  forced final answer (budget spent) or a format-error turn also gets the answer;
- judge: valid KnowGen scores (all 1: every sample kept);
- summary: one paragraph restating the browse query; a repair turn gets valid JSON again.

Faults are injected per role with `policy.inject(role, *replies)`: the next requests of that role
get those replies first (any `Reply` of the scripted server: `Status(429, retry_after="1")`, prose,
...), and the special reply `UNKNOWN_IMAGE` makes the next teacher answer name an IMG id that no
tool ever returned. `policy.counts` counts requests per role (faults included).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter, deque
from typing import Any

from testkit.servers.openai_server import RecordedRequest, Reply, message_text

WRITER = "writer"
TEACHER = "teacher"
JUDGE = "judge"
SUMMARY = "summary"
UNKNOWN_IMAGE = "unknown-image"  # a fault token: the teacher answers with an IMG id never returned

SYSTEM_PREFIXES = {
    "You write tasks for a knowledge-grounded image generator": WRITER,
    "You are a research assistant for an image generator": TEACHER,
    "You are a strict judge of ground-truth images": JUDGE,
    "You read one part of a web page for a research assistant": SUMMARY,
}

_TITLE = re.compile(r"^Title: (.+)$", re.MULTILINE)
_CATEGORY = re.compile(r"Suggested category: ([a-z_]+)\.")
_COUNT = re.compile(r"^Write (\d+) image-generation task")
_LINK = re.compile(r"^\[[^\]]*\]\((\S+)\)", re.MULTILINE)
_IMAGE_LINE = re.compile(r"^(IMG_\d{3,}): ", re.MULTILINE)
_QUERY = re.compile(r'relevant to "([^"]*)"|^Query: (.+)$', re.MULTILINE)


def role_of(request: RecordedRequest) -> str:
    messages = request.messages
    system = message_text(messages[0]) if messages and messages[0].get("role") == "system" else ""
    for prefix, role in SYSTEM_PREFIXES.items():
        if system.startswith(prefix):
            return role
    return "unknown"


def _think(text: str, call: dict[str, Any] | None = None, answer: dict[str, Any] | None = None) -> str:
    body = f"<think>{text}</think>\n"
    if call is not None:
        return body + f"<tool_call>{json.dumps(call)}</tool_call>"
    return body + f"<answer>{json.dumps(answer)}</answer>"


def writer_reply(request: RecordedRequest) -> str:
    text = message_text(request.messages[1])
    titles = _TITLE.findall(text)
    category = (_CATEGORY.search(text) or re.search("(architecture)", "architecture")).group(1)
    count = int((_COUNT.search(text) or re.search(r"(1)", "1")).group(1))
    subject = " and ".join(titles) or "the subject"
    prompts = [
        {
            "prompt": f"{subject}: an illustrated museum poster showing it accurately, with a caption "
            f"naming it and stating its best-known date and place (task {index + 1}).",
            "category": category,
            "difficulty": "medium",
            "required_facts": [f"the best-known date of {title}" for title in titles] or ["a date"],
        }
        for index in range(count)
    ]
    return json.dumps({"prompts": prompts})


def judge_reply() -> str:
    return json.dumps(
        {
            "faithfulness": 1,
            "visual_correctness": 1,
            "text_accuracy": 1,
            "aesthetics": 1,
            "explanation": "All requested elements are present and correct.",
        }
    )


def summary_reply(request: RecordedRequest) -> str:
    text = message_text(request.messages[-1])
    match = _QUERY.search(text)
    query = next((group for group in match.groups() if group), "") if match else ""
    return f"The page answers the query {query or 'asked'}: it names the subject, its date and its place."


def task_subject(task: str) -> str:
    """The subject the writer policy put before the first colon (the whole task otherwise)."""
    return task.split(":", 1)[0].strip() or task[:80]


def teacher_reply(request: RecordedRequest, unknown_image: bool = False) -> str:
    messages = request.messages
    task = message_text(messages[1])
    subject = task_subject(task)
    tool_responses = [message_text(m) for m in messages[2:] if m.get("role") == "user"]
    last = tool_responses[-1] if tool_responses else ""
    images_shown = [img for response in tool_responses for img in _IMAGE_LINE.findall(response)]
    searched = any("### Results for" in response for response in tool_responses)
    browsed = any(
        "### Content of" in response or "has no content relevant" in response for response in tool_responses
    )
    image_searched = any("### Images for" in response for response in tool_responses)
    wants_answer = "Do not call any more tools" in last or "could not be used" in last
    if not searched and not wants_answer:
        call = {"name": "search", "arguments": {"queries": [subject], "top_k": 3}}
        return _think(f"I need facts about {subject}.", call=call)
    if not browsed and not wants_answer:
        links = [link for response in tool_responses for link in _LINK.findall(response)]
        if links:
            call = {"name": "browse", "arguments": {"url": links[0], "query": f"{subject} date and place"}}
            return _think("The first result looks authoritative; read it.", call=call)
    if not image_searched and not wants_answer:
        call = {"name": "image_search", "arguments": {"query": subject, "top_k": 3}}
        return _think(f"I need reference images of {subject}.", call=call)
    chosen = sorted(set(images_shown))[:2]
    if unknown_image:
        chosen = ["IMG_999"]
    answer = {
        "gen_prompt": f"{subject}, drawn as in the first reference image, on a museum poster with a caption "
        "naming it and stating its date and place.",
        "reference_images": [{"img_id": img_id, "note": f"{subject}"} for img_id in chosen],
    }
    return _think("I have the facts and the references.", answer=answer)


class CompetentPolicy:
    """The server's `respond` function (pass to `ScriptedOpenAIServer(respond=policy)`)."""

    def __init__(self) -> None:
        self._faults: dict[str, deque[Any]] = {role: deque() for role in (WRITER, TEACHER, JUDGE, SUMMARY)}
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()

    def inject(self, role: str, *replies: Any) -> CompetentPolicy:
        with self._lock:
            self._faults[role].extend(replies)
        return self

    def pending_faults(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._faults.values())

    def __call__(self, request: RecordedRequest) -> Reply:
        role = role_of(request)
        with self._lock:
            self.counts[role] += 1
            queue = self._faults.get(role)
            fault = queue.popleft() if queue else None
            if fault is not None:
                self.faults_served[role] += 1
        if role == TEACHER:
            if fault == UNKNOWN_IMAGE:
                reply = teacher_reply(request)
                if "<answer>" in reply:
                    return teacher_reply(request, unknown_image=True)
                with self._lock:  # not an answer turn yet: keep the fault for this role's next turn
                    self._faults[TEACHER].appendleft(UNKNOWN_IMAGE)
                    self.faults_served[role] -= 1
                return reply
            if fault is not None:
                return fault
            return teacher_reply(request)
        if fault is not None:
            return fault
        if role == WRITER:
            return writer_reply(request)
        if role == JUDGE:
            return judge_reply()
        if role == SUMMARY:
            return summary_reply(request)
        raise LookupError(f"no policy for a request whose system prompt is not a known role ({request.path})")
