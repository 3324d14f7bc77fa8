"""A small OpenAI-compatible HTTP server for tests (stdlib only).

Serves ``POST /v1/chat/completions`` (plain and SSE streaming, tool calls),
``POST /v1/completions`` (legacy text completions, plain and streaming),
``POST /v1/embeddings`` (deterministic vectors, float or base64) and
``GET /v1/models`` on 127.0.0.1, on an ephemeral port, from a daemon thread.

Tests script the next answers of each endpoint with ``enqueue_*``; when nothing
is queued the server answers a default response. Every request is recorded::

    with FakeOpenAIServer() as server:
        server.enqueue_chat("Hi!", prompt_tokens=12, completion_tokens=3)
        client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        ...
        assert server.requests[0]["model"] == "gpt-4o-mini"

Build clients with ``max_retries=0``: the openai client retries 429 and 5xx
answers by default, and each retry would consume the next queued answer.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

import pytest

Endpoint = Literal["chat", "completions", "embeddings"]
Json = dict[str, Any]

DEFAULT_CHAT_CONTENT = "Hello from the fake OpenAI server."
DEFAULT_COMPLETION_TEXT = " This is a fake completion."
DEFAULT_PROMPT_TOKENS = 10
DEFAULT_COMPLETION_TOKENS = 5
SYSTEM_FINGERPRINT = "fp_fake0penai"

#: Requested model -> model the API reports back: like the real API, an alias is
#: answered with a dated snapshot. Chat models not listed are echoed unchanged.
MODEL_SNAPSHOTS: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "o3-mini": "o3-mini-2025-01-31",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}

#: Vector size per embedding model when the request gives no ``dimensions``.
EMBEDDING_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
DEFAULT_EMBEDDING_DIMENSIONS = 1536

# status -> (error type, error code), as the real API reports them
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ERROR_MESSAGES: dict[int, str] = {
    429: "Rate limit reached for requests. Please try again in 1s.",
    500: "The server had an error while processing your request. Sorry about that!",
}


# ---------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class ChatScript:
    """One scripted ``/chat/completions`` answer."""

    content: str | None = DEFAULT_CHAT_CONTENT
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    completion_tokens: int = DEFAULT_COMPLETION_TOKENS
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    model: str | None = None
    tool_calls: tuple[Json, ...] = ()
    finish_reason: str = "stop"
    include_usage: bool = True
    usage_details: bool = True
    delay: float = 0.0
    chunk_delay: float = 0.0
    stream_error_after: int | None = None


@dataclass(frozen=True)
class CompletionScript:
    """One scripted legacy ``/completions`` answer."""

    text: str = DEFAULT_COMPLETION_TEXT
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    completion_tokens: int = DEFAULT_COMPLETION_TOKENS
    model: str | None = None
    finish_reason: str = "stop"
    delay: float = 0.0
    chunk_delay: float = 0.0


@dataclass(frozen=True)
class EmbeddingScript:
    """Overrides for one ``/embeddings`` answer (vectors stay deterministic)."""

    prompt_tokens: int | None = None
    model: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class ErrorScript:
    """One scripted HTTP error with an OpenAI-style error body."""

    status: int
    message: str
    error_type: str = "invalid_request_error"
    code: str | None = None
    retry_after: float | None = None
    delay: float = 0.0


Script = ChatScript | CompletionScript | EmbeddingScript | ErrorScript


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received (``body`` is the decoded JSON, if any)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


# ---------------------------------------------------------------------- helpers


def fake_embedding(item: str | Sequence[int], dimensions: int) -> list[float]:
    """The deterministic unit vector (float32 values) served for one input."""
    rng = random.Random(hashlib.sha256(json.dumps(item).encode()).digest())
    vector = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    # round-trip through float32 so float and base64 answers agree exactly
    return list(struct.unpack(f"<{dimensions}f", _pack([v / norm for v in vector])))


def _pack(vector: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


def _reported_model(requested: Any, override: str | None) -> str:
    if override is not None:
        return override
    name = str(requested or "gpt-4o-mini")
    return MODEL_SNAPSHOTS.get(name, name)


def _word_chunks(text: str) -> list[str]:
    """Split text into word pieces (leading space kept) that concatenate to it."""
    return re.findall(r"\s*\S+|\s+", text)


def _split(text: str, parts: int) -> list[str]:
    """Split text into at most ``parts`` consecutive pieces."""
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _normalize_tool_call(call: Mapping[str, Any]) -> Json:
    """``{"name", "arguments", "id"?}`` or the wire shape -> the wire shape."""
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": function["name"], "arguments": arguments},
    }


def _embedding_inputs(raw: Any) -> list[Any]:
    """Inputs as a list; accepts str, list[str], list[int] and list[list[int]]."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        return [raw]  # one tokenized input
    if isinstance(raw, list) and raw:
        return raw
    raise ValueError("'input' must be a string, strings or token ids, not empty")


def _count_tokens(item: str | Sequence[int]) -> int:
    """Rough token count: one per word of a string, one per id of a token list."""
    return max(1, len(item.split()) if isinstance(item, str) else len(item))


def _error_script(status: int, message: str, code: str | None = None) -> ErrorScript:
    error_type, default_code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return ErrorScript(status, message, error_type, code or default_code)


def _chat_usage(script: ChatScript) -> Json | None:
    """The ``usage`` object of a chat completion, as the real API reports it."""
    if not script.include_usage:
        return None
    usage: Json = {
        "prompt_tokens": script.prompt_tokens,
        "completion_tokens": script.completion_tokens,
        "total_tokens": script.prompt_tokens + script.completion_tokens,
    }
    if script.usage_details:
        usage["prompt_tokens_details"] = {
            "cached_tokens": script.cached_tokens or 0,
            "audio_tokens": 0,
        }
        usage["completion_tokens_details"] = {
            "reasoning_tokens": script.reasoning_tokens or 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _chat_chunks(script: ChatScript, base: Json, include_usage: bool) -> list[Json]:
    """The ``chat.completion.chunk`` events of a streamed answer, in order."""

    def chunk(delta: Json, finish_reason: str | None = None) -> Json:
        choice = {"index": 0, "delta": delta, "logprobs": None}
        return {**base, "choices": [{**choice, "finish_reason": finish_reason}]}

    first: Json = {"role": "assistant", "content": "", "refusal": None}
    events: list[Json] = []
    if script.content is not None:
        events.append(chunk(first))
        events += [chunk({"content": p}) for p in _word_chunks(script.content)]
    content_events = len(events)
    for index, call in enumerate(script.tool_calls):
        # as the real API does: a head delta with id and name, then argument pieces
        function = call["function"]
        head = {**call, "index": index, "function": {**function, "arguments": ""}}
        delta: Json = {"tool_calls": [head]}
        events.append(chunk({**first, "content": None, **delta} if not events else delta))
        events += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in _split(function["arguments"], 3)
        ]
    if script.stream_error_after is not None:
        cut = script.stream_error_after + (1 if content_events else 0)
        error = _error_script(500, _ERROR_MESSAGES[500])
        return [*events[:cut], _error_body(error)]
    events.append(chunk({}, script.finish_reason))
    # like the real API: "usage": null on every chunk, then a chunk with only usage
    if include_usage:
        events = [{**e, "usage": None} for e in events]
        events.append({**base, "choices": [], "usage": _chat_usage(script)})
    return events


def _error_body(script: ErrorScript) -> Json:
    return {
        "error": {
            "message": script.message,
            "type": script.error_type,
            "param": None,
            "code": script.code,
        }
    }


# ---------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default backlog of 5 resets concurrent clients
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the owning FakeOpenAIServer."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")

    def send_json(self, payload: Any, status: int = 200, **headers: str) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._openai_headers(headers)
        self.wfile.write(data)
        self.wfile.flush()

    def send_error_script(self, script: ErrorScript) -> None:
        time.sleep(script.delay)
        headers: dict[str, str] = {}
        if script.retry_after is not None:
            headers["retry-after"] = f"{script.retry_after:g}"
        self.send_json(_error_body(script), script.status, **headers)

    def send_sse(self, events: Sequence[Any], chunk_delay: float) -> None:
        """Server-sent events (chunked transfer encoding), ending with ``[DONE]``."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self._openai_headers({})
        try:
            for index, event in enumerate(events):
                if index and chunk_delay:
                    time.sleep(chunk_delay)
                self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except ConnectionError:  # the client stopped reading
            self.close_connection = True

    def _openai_headers(self, extra: Mapping[str, str]) -> None:
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.send_header("openai-processing-ms", "1")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


# ---------------------------------------------------------------------- server


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 that answers scripted responses."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._queues: dict[Endpoint, deque[Script]] = {
            "chat": deque(),
            "completions": deque(),
            "embeddings": deque(),
        }
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.calls: list[RecordedRequest] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeOpenAIServer:
        """Bind the port and serve from a daemon thread (no-op when running)."""
        if self._httpd is None:
            httpd = _HTTPServer(self._address, _Handler)
            httpd.fake = self
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-openai-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections and free the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The bound port (the server must be started)."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL for clients, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    # ------------------------------------------------------------------ records

    @property
    def requests(self) -> list[Any]:
        """JSON bodies of the POST requests received, oldest first."""
        with self._lock:
            return [c.body for c in self.calls if c.method == "POST"]

    @property
    def last_request(self) -> Any:
        """JSON body of the last POST request (AssertionError when none came)."""
        bodies = self.requests
        if not bodies:
            raise AssertionError("the fake OpenAI server received no request")
        return bodies[-1]

    def pending(self, endpoint: Endpoint | None = None) -> int:
        """How many queued answers are left (for one endpoint, or in all)."""
        with self._lock:
            queues = [self._queues[endpoint]] if endpoint else self._queues.values()
            return sum(len(q) for q in queues)

    def reset(self) -> None:
        """Forget recorded requests and queued answers."""
        with self._lock:
            self.calls.clear()
            for queue in self._queues.values():
                queue.clear()

    # ------------------------------------------------------------------ scripting

    def enqueue_chat(
        self,
        content: str | None = None,
        *,
        prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
        completion_tokens: int = DEFAULT_COMPLETION_TOKENS,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        model: str | None = None,
        tool_calls: Sequence[Mapping[str, Any]] | None = None,
        finish_reason: str | None = None,
        include_usage: bool = True,
        usage_details: bool = True,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        stream_error_after: int | None = None,
    ) -> FakeOpenAIServer:
        """Queue the next ``/chat/completions`` answer; returns self for chaining.

        ``content`` defaults to DEFAULT_CHAT_CONTENT, or to null with ``tool_calls``
        (items ``{"name", "arguments": dict | JSON str, "id"?}`` or the wire
        shape); ``finish_reason`` defaults to "tool_calls" with them, else "stop".
        ``cached_tokens``/``reasoning_tokens`` of None are reported as 0, as the
        real API does; ``usage_details=False`` drops the ``*_tokens_details``
        and ``include_usage=False`` the whole ``usage``. ``model`` is the model
        reported back (default: MODEL_SNAPSHOTS of the requested one). ``delay``
        waits before answering, ``chunk_delay`` between stream events.
        ``stream_error_after=N`` makes a stream send an error event after N
        content (or tool-call) deltas; the openai client raises ``APIError``.
        """
        calls = tuple(_normalize_tool_call(c) for c in tool_calls or ())
        script = ChatScript(
            content=DEFAULT_CHAT_CONTENT if content is None and not calls else content,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            reasoning_tokens=reasoning_tokens,
            model=model,
            tool_calls=calls,
            finish_reason=finish_reason or ("tool_calls" if calls else "stop"),
            include_usage=include_usage,
            usage_details=usage_details,
            delay=delay,
            chunk_delay=chunk_delay,
            stream_error_after=stream_error_after,
        )
        return self._enqueue("chat", script)

    def enqueue_completion(
        self,
        text: str = DEFAULT_COMPLETION_TEXT,
        *,
        prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
        completion_tokens: int = DEFAULT_COMPLETION_TOKENS,
        model: str | None = None,
        finish_reason: str = "stop",
        delay: float = 0.0,
        chunk_delay: float = 0.0,
    ) -> FakeOpenAIServer:
        """Queue the next legacy ``/completions`` answer; returns self for chaining.

        Each prompt of a batched request gets ``text``; the usage numbers are the
        totals of the request. ``model`` defaults to the requested one.
        """
        script = CompletionScript(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=model,
            finish_reason=finish_reason,
            delay=delay,
            chunk_delay=chunk_delay,
        )
        return self._enqueue("completions", script)

    def enqueue_embeddings(
        self,
        *,
        prompt_tokens: int | None = None,
        model: str | None = None,
        delay: float = 0.0,
    ) -> FakeOpenAIServer:
        """Queue overrides for the next ``/embeddings`` answer; returns self.

        Vectors stay deterministic (see ``fake_embedding``). ``prompt_tokens``
        replaces the default count (a token per word of each string input, per id
        of each token-id input); ``model`` the reported model (default: requested).
        """
        return self._enqueue("embeddings", EmbeddingScript(prompt_tokens, model, delay))

    def enqueue_error(
        self,
        status: int = 500,
        message: str | None = None,
        *,
        endpoint: Endpoint = "chat",
        error_type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
    ) -> FakeOpenAIServer:
        """Queue an HTTP error as the next answer of ``endpoint``; returns self.

        The body is ``{"error": {"message", "type", "param", "code"}}`` with the
        type and code the real API uses for ``status`` unless given. The openai
        client raises ``RateLimitError`` for 429, ``InternalServerError`` for
        5xx. ``retry_after`` sets the ``retry-after`` header (seconds).
        """
        default = _error_script(status, message or _ERROR_MESSAGES.get(status, ""))
        script = ErrorScript(
            status=status,
            message=default.message or f"Fake OpenAI error {status}",
            error_type=error_type or default.error_type,
            code=code or default.code,
            retry_after=retry_after,
            delay=delay,
        )
        return self._enqueue(endpoint, script)

    def _enqueue(self, endpoint: Endpoint, script: Script) -> FakeOpenAIServer:
        with self._lock:
            self._queues[endpoint].append(script)
        return self

    def _track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    # ------------------------------------------------------------------ handling

    def _handle(self, handler: _Handler, method: str) -> None:
        """Record a request, then answer the queued script or the default one."""
        path = handler.path.split("?", 1)[0].rstrip("/")
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.calls.append(RecordedRequest(method, path, headers, body))

        if (method, path) == ("GET", "/v1/models"):
            handler.send_json(self._models())
            return
        routes: dict[str, tuple[Endpoint, Callable[[_Handler, Json, Any], None]]] = {
            "/v1/chat/completions": ("chat", self._chat),
            "/v1/completions": ("completions", self._completions),
            "/v1/embeddings": ("embeddings", self._embeddings),
        }
        if method != "POST" or path not in routes:
            handler.send_error_script(_error_script(404, f"Invalid URL ({method} {path})"))
            return
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request."
            handler.send_error_script(_error_script(400, message))
            return
        endpoint, answer = routes[path]
        with self._lock:
            queue = self._queues[endpoint]
            script = queue.popleft() if queue else None
        if isinstance(script, ErrorScript):
            handler.send_error_script(script)
            return
        time.sleep(getattr(script, "delay", 0.0))
        answer(handler, body, script)

    @staticmethod
    def _models() -> Json:
        names = sorted({*MODEL_SNAPSHOTS.values(), *EMBEDDING_DIMENSIONS})
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "system"} for name in names]
        return {"object": "list", "data": data}

    @staticmethod
    def _chat(handler: _Handler, body: Json, script: ChatScript | None) -> None:
        script = script or ChatScript()
        base: Json = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _reported_model(body.get("model"), script.model),
        }
        extra = {"service_tier": "default", "system_fingerprint": SYSTEM_FINGERPRINT}
        if body.get("stream"):
            include_usage = (body.get("stream_options") or {}).get("include_usage")
            stream_base = {**base, "object": "chat.completion.chunk", **extra}
            events = _chat_chunks(script, stream_base, bool(include_usage))
            handler.send_sse(events, script.chunk_delay)
            return
        message: Json = {
            "role": "assistant",
            "content": script.content,
            "refusal": None,
            "annotations": [],
        }
        if script.tool_calls:
            message["tool_calls"] = list(script.tool_calls)
        finish = script.finish_reason
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i in range(int(body.get("n") or 1))
        ]
        payload = {**base, "choices": choices, **extra}
        if (usage := _chat_usage(script)) is not None:
            payload["usage"] = usage
        handler.send_json(payload)

    @staticmethod
    def _completions(handler: _Handler, body: Json, script: CompletionScript | None) -> None:
        script = script or CompletionScript()
        base: Json = {
            "id": f"cmpl-{uuid.uuid4().hex[:29]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": script.model or str(body.get("model") or "gpt-3.5-turbo-instruct"),
        }
        usage = {
            "prompt_tokens": script.prompt_tokens,
            "completion_tokens": script.completion_tokens,
            "total_tokens": script.prompt_tokens + script.completion_tokens,
        }

        def choice(text: str, index: int = 0, finish: str | None = None) -> Json:
            return {
                "text": text,
                "index": index,
                "logprobs": None,
                "finish_reason": finish,
            }

        if body.get("stream"):
            events = [{**base, "choices": [choice(p)]} for p in _word_chunks(script.text)]
            events.append({**base, "choices": [choice("", 0, script.finish_reason)]})
            if (body.get("stream_options") or {}).get("include_usage"):
                events = [{**e, "usage": None} for e in events]
                events.append({**base, "choices": [], "usage": usage})
            handler.send_sse(events, script.chunk_delay)
            return
        prompt = body.get("prompt")
        batched = isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
        count = (len(prompt) if batched else 1) * int(body.get("n") or 1)
        choices = [choice(script.text, i, script.finish_reason) for i in range(count)]
        extra = {"usage": usage, "system_fingerprint": SYSTEM_FINGERPRINT}
        handler.send_json({**base, "choices": choices, **extra})

    @staticmethod
    def _embeddings(handler: _Handler, body: Json, script: EmbeddingScript | None) -> None:
        script = script or EmbeddingScript()
        try:
            inputs = _embedding_inputs(body.get("input"))
        except ValueError as exc:
            handler.send_error_script(_error_script(400, str(exc)))
            return
        model = str(body.get("model") or "text-embedding-3-small")
        size = EMBEDDING_DIMENSIONS.get(model, DEFAULT_EMBEDDING_DIMENSIONS)
        dimensions = int(body.get("dimensions") or size)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            vector: Any = fake_embedding(item, dimensions)
            if as_base64:
                vector = base64.b64encode(_pack(vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = script.prompt_tokens
        if tokens is None:
            tokens = sum(_count_tokens(item) for item in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        payload = {"object": "list", "data": data, "model": script.model or model}
        handler.send_json({**payload, "usage": usage})


# ---------------------------------------------------------------------- fixture


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A started FakeOpenAIServer, stopped after the test.

    To share it, import it into a conftest.py (``tests/`` is on sys.path under
    pytest's default import mode): ``from fake_openai import fake_openai``.
    """
    with FakeOpenAIServer() as server:
        yield server
