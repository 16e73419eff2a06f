"""OpenAI-compatible servers on 127.0.0.1 for the API backends of the harness.

``LocalServer`` is an HTTP server on a free port of 127.0.0.1 that answers every POST with
``answer(path, payload) -> (status, body)`` and lists what it received (``seen``: path and JSON
payload, in arrival order). ``FakeChatServer`` answers /v1/chat/completions from recorded
exchanges in the exact response format of vLLM's chat server: the task's question turn with a
fixed answer, the verbalized follow-up turn (its last user message is the verbalized prompt)
with the reply recorded for the conversation's question. ``completions_handler`` serves
/v1/completions from ``support.fakes.FakeCompletionsServer`` (the tiny GPT-2).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict[str, Any]]
Handler = Callable[[str, dict[str, Any]], Answer]

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


class LocalServer:
    """An HTTP server on 127.0.0.1 answering POSTs with ``handler(path, payload)``; ``url(path)``
    is the address of ``path``, ``seen`` every (path, payload) received."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[tuple[str, dict[str, Any]]] = []
        server = self

        class Http(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.seen.append((self.path, payload))
                try:
                    status, body = server.handler(self.path, payload)
                except Exception as error:  # noqa: BLE001 (the client sees it as an HTTP 500)
                    status, body = 500, {"error": {"message": f"{type(error).__name__}: {error}"}}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"

    def payloads(self, path: str) -> list[dict[str, Any]]:
        """The payloads received at ``path``, in arrival order."""
        return [payload for seen_path, payload in self.seen if seen_path == path]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@contextmanager
def serving(handler: Handler) -> Iterator[LocalServer]:
    server = LocalServer(handler)
    try:
        yield server
    finally:
        server.close()


def chat_response(content: str, model: str, *, stop_reason: str | None = None) -> dict[str, Any]:
    """A chat completion in vLLM's format (one choice, no log-probabilities)."""
    return {
        "id": "chatcmpl-5f1c0a7e2b9d4c6e8a3f1b2d4e6f8a0c",
        "object": "chat.completion",
        "created": 1765130118,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "tool_calls": [],
                    "reasoning_content": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": stop_reason,
            }
        ],
        "usage": {"prompt_tokens": 24, "total_tokens": 27, "completion_tokens": 3},
        "prompt_logprobs": None,
    }


def not_found(message: str) -> Answer:
    return 404, {"object": "error", "message": message, "type": "NotFoundError", "code": 404}


class FakeChatServer(LocalServer):
    """/v1/chat/completions for model ``model``: a conversation whose last user message is
    ``verbalized_prompt`` gets ``replies[question]`` (``question``: the content of its first user
    message), any other conversation ``answer``. Unknown paths, models and questions are 404."""

    def __init__(
        self, *, model: str, answer: str, verbalized_prompt: str, replies: Mapping[str, str]
    ) -> None:
        self.model = model
        self.answer = answer
        self.verbalized_prompt = verbalized_prompt
        self.replies = dict(replies)
        super().__init__(self.respond)

    def respond(self, path: str, payload: dict[str, Any]) -> Answer:
        if path != CHAT_PATH:
            return not_found(f"no route {path}")
        if payload.get("model") != self.model:
            return not_found(f"The model `{payload.get('model')}` does not exist.")
        messages = payload["messages"]
        users = [m["content"] for m in messages if m["role"] == "user"]
        if messages[-1] == {"role": "user", "content": self.verbalized_prompt}:
            reply = self.replies.get(users[0])
            if reply is None:
                return not_found(f"no recorded reply for the question {users[0]!r}")
            return 200, chat_response(reply, self.model, stop_reason="\n")
        return 200, chat_response(self.answer, self.model)

    @property
    def conversations(self) -> list[list[dict[str, str]]]:
        """The messages of every chat request, in arrival order."""
        return [payload["messages"] for payload in self.payloads(CHAT_PATH)]


def completions_handler(fake: Callable[..., Any]) -> Handler:
    """/v1/completions answered by ``fake`` (a ``FakeCompletionsServer``); other paths 404."""

    def handle(path: str, payload: dict[str, Any]) -> Answer:
        if path != COMPLETIONS_PATH:
            return not_found(f"no route {path}")
        return 200, fake(path, payload).body

    return handle
