"""A local fake of the Slack Web API, as strict as Slack where our code depends on it.

Built from Slack's method and Block Kit reference pages, not from what our code sends:

* the bearer token is checked, and each method's scopes (``missing_scope``);
* only ``chat.postMessage`` takes a channel *name*; ``conversations.history``,
  ``conversations.replies``, ``conversations.info`` and ``chat.update`` take a conversation ID and
  answer ``channel_not_found`` for a name, as Slack does;
* ``conversations.list`` pages with an opaque cursor, may return fewer items than ``limit`` before
  the end (as documented), refuses ``limit`` over 1,000 and needs ``channels:read`` /
  ``groups:read`` for public / private channels;
* Block Kit payloads are validated against the documented limits (blocks per message, text object
  lengths, header, context and actions elements, buttons, selects and options, unique ids) and
  refused with ``invalid_blocks`` plus the reasons, like Slack;
* every call is recorded, and the next calls can be made to answer 429 + Retry-After, a 5xx, or to
  stall until the client gives up.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes.base import LocalServer
from tests.fakes.slack_files import FakeFiles

# Slack's documented limits (Block Kit reference; chat.postMessage; conversations.list).
MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_TEXT = 3000  # any text object's text; a section's text
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_MESSAGE_TEXT = 40_000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_ACTION_VALUE = 2000
MAX_ACTION_ID = 255
MAX_BLOCK_ID = 255
MAX_URL = 3000
MAX_PLACEHOLDER = 150
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_LIST_LIMIT = 1000
MAX_IMAGE_TEXT = 2000  # an image block's alt_text and title

ALL_SCOPES = frozenset(
    {
        "chat:write",
        "channels:history",
        "groups:history",
        "channels:read",
        "groups:read",
        "commands",
        "files:write",
    }
)
# The scope each method needs (for conversations.* it depends on the channel type: see _needs).
METHOD_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
}
# Methods whose ``channel`` must be a conversation ID; chat.postMessage also takes a name.
ID_ONLY = {"conversations.history", "conversations.replies", "conversations.info", "chat.update"}


@dataclass
class Call:
    """One request the fake received."""

    method: str
    args: dict[str, Any]
    token: str | None
    status: int = 200


def _cursor(offset: int) -> str:
    # Opaque, like Slack's base64 cursors: clients must pass it back, not compute it.
    return base64.b64encode(f"next:{offset}".encode()).decode()


def _offset(cursor: str) -> int | None:
    try:
        kind, _, value = base64.b64decode(cursor, validate=True).decode().partition(":")
        return int(value) if kind == "next" else None
    except (ValueError, UnicodeDecodeError):
        return None


def _window(
    args: dict[str, Any], max_limit: int, *, clamp: bool
) -> tuple[int, int] | dict[str, Any]:
    """``(start, limit)`` of a paged call, or Slack's error for a bad ``limit`` or ``cursor``.

    History and replies clamp an oversized limit; conversations.list refuses it.
    """
    try:
        limit = int(args.get("limit", 100))
    except ValueError:
        return {"ok": False, "error": "invalid_limit"}
    if clamp:
        limit = min(limit, max_limit)
    elif not 1 <= limit <= max_limit:
        return {"ok": False, "error": "invalid_limit"}
    start = 0
    if args.get("cursor"):
        offset = _offset(str(args["cursor"]))
        if offset is None:
            return {"ok": False, "error": "invalid_cursor"}
        start = offset
    return start, limit


@dataclass
class FakeSlack:
    """State of the fake workspace; start it with :func:`start_fake_slack`."""

    token: str = "xoxb-test-token"
    channels: dict[str, str] = field(
        default_factory=lambda: {
            "#feedback-review": "C0REVIEW",
            "#support-handoffs": "C0SUPPORT",
            "#sales-leads": "C0SALES",
            "#product-feedback": "C0PRODUCT",
            "#marketing-kudos": "C0MARKETING",
        }
    )
    private: set[str] = field(default_factory=set)  # IDs of private channels
    scopes: set[str] = field(default_factory=lambda: set(ALL_SCOPES))
    # conversations.list returns at most this many per page, whatever ``limit`` asks for.
    list_page_cap: int = 1000
    calls: list[Call] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: FakeFiles = field(default_factory=FakeFiles)
    responses: list[dict[str, Any]] = field(default_factory=list)  # posts to response_url
    failures: list[tuple[str, int, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set to end every stall (at shutdown): a stalled request never answers before that.
    unstall: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    _ts: float = 1_700_000_000.0

    def fail_next(
        self, method: str, status: int = 429, retry_after: float = 1, times: int = 1
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``status``.

        ``status`` 0 is a stall: no answer until the client gives up (or the fake shuts down).
        """
        with self.lock:
            self.failures.extend([(method, status, retry_after)] * times)

    def response_url(self, name: str = "T0/1/abc") -> str:
        """A ``response_url`` served by this fake, as Slack puts in interactive payloads."""
        return self.url.replace("/api/", f"/response/{name}")

    def calls_to(self, method: str, ok_only: bool = True) -> list[Call]:
        """Calls of one API method (by default only those that were answered 200)."""
        return [c for c in self.calls if c.method == method and (c.status == 200 or not ok_only)]

    def posted(self) -> list[dict[str, Any]]:
        """Every stored message across channels."""
        return [m for msgs in self.messages.values() for m in msgs]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The replies in one thread (without the parent)."""
        return [m for m in self.messages[channel] if m.get("thread_ts") == ts and m["ts"] != ts]

    def add_channel(self, name: str, channel_id: str, *, private: bool = False) -> None:
        """Create a channel the bot is a member of."""
        self.channels[name if name.startswith("#") else "#" + name] = channel_id
        if private:
            self.private.add(channel_id)

    def _channel_id(self, channel: str, *, names: bool) -> str | None:
        if channel in self.channels.values():
            return channel
        if not names:
            return None  # Slack looks a conversation ID up; a name is simply not found
        return self.channels.get(channel) or self.channels.get("#" + channel)

    def _next_ts(self) -> str:
        self._ts += 1
        return f"{self._ts:.6f}"

    def _needs(self, method: str, channel_id: str | None) -> str | None:
        if method in METHOD_SCOPES:
            return METHOD_SCOPES[method]
        if method in ("conversations.history", "conversations.replies") and channel_id:
            return "groups:history" if channel_id in self.private else "channels:history"
        if method == "conversations.info" and channel_id:
            return "groups:read" if channel_id in self.private else "channels:read"
        return None

    # ------------------------------------------------------------------ methods
    def handle(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Answer one authenticated call like the Web API would."""
        if method == "auth.test":
            return {
                "ok": True,
                "team": "Fake",
                "user": "triage-bot",
                "user_id": "UBOT",
                "team_id": "T0",
            }
        if method == "conversations.list":
            return self._list(args)
        channel: str | None = None
        if method in ID_ONLY or method == "chat.postMessage":
            raw = str(args.get("channel") or "")
            channel = self._channel_id(raw, names=method not in ID_ONLY)
            if channel is None:
                return {"ok": False, "error": "channel_not_found"}
        needed = self._needs(method, channel)
        if needed and needed not in self.scopes:
            return self._missing(needed)
        if method == "chat.postMessage":
            assert channel is not None
            error = self._check_content(args)
            if error:
                return error
            ts = self._next_ts()
            msg = {
                "type": "message",
                "ts": ts,
                "text": args.get("text", ""),
                "blocks": args.get("blocks") or [],
                "metadata": args.get("metadata"),
                "thread_ts": args.get("thread_ts"),
                "user": "UBOT",
            }
            if msg["thread_ts"]:
                parent = next(
                    (m for m in self.messages[channel] if m["ts"] == msg["thread_ts"]), None
                )
                if parent is None:
                    return {"ok": False, "error": "thread_not_found"}
                # Threads are one level deep: a reply to a reply joins the parent's thread.
                msg["thread_ts"] = parent.get("thread_ts") or parent["ts"]
            self.messages[channel].append(msg)
            return {"ok": True, "channel": channel, "ts": ts, "message": msg}
        if method == "chat.update":
            assert channel is not None
            error = self._check_content(args)
            if error:
                return error
            for msg in self.messages[channel]:
                if msg["ts"] == args.get("ts"):
                    msg["text"] = args.get("text", msg["text"])
                    msg["blocks"] = args.get("blocks") or msg["blocks"]
                    return {"ok": True, "channel": channel, "ts": msg["ts"], "text": msg["text"]}
            return {"ok": False, "error": "message_not_found"}
        if method == "conversations.info":
            assert channel is not None
            return {"ok": True, "channel": self._conversation(channel)}
        if method == "conversations.history":
            assert channel is not None
            include_meta = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
            # Newest first, as Slack does; threaded replies live in conversations.replies only.
            msgs = [
                m
                for m in reversed(self.messages[channel])
                if not m.get("thread_ts") or m["thread_ts"] == m["ts"]
            ]
            return self._page(msgs, args, include_meta, channel=channel, max_limit=999)
        if method == "conversations.replies":
            assert channel is not None
            parent_ts = str(args.get("ts") or "")
            if not parent_ts:
                return {"ok": False, "error": "invalid_arguments"}
            thread = [
                m
                for m in self.messages[channel]
                if m["ts"] == parent_ts or m.get("thread_ts") == parent_ts
            ]
            if not thread:
                return {"ok": False, "error": "thread_not_found"}
            include_meta = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
            # Oldest first, parent included, as Slack does.
            return self._page(thread, args, include_meta, channel=None, max_limit=1000)
        if method == "files.getUploadURLExternal":
            return self.files.get_upload_url(args, self.url)
        if method == "files.completeUploadExternal":
            channel_id = str(args.get("channel_id") or "")
            return self.files.complete(args, channel_id in self.channels.values())
        if method == "views.publish":
            if not args.get("user_id") or not args.get("view"):
                return {"ok": False, "error": "invalid_arguments"}
            view = args["view"] if isinstance(args["view"], dict) else json.loads(args["view"])
            if view.get("type") != "home":
                return {"ok": False, "error": "invalid_arguments"}
            problems = check_blocks(view.get("blocks", []), max_blocks=MAX_VIEW_BLOCKS)
            if problems:
                return _invalid_blocks(problems)
            self.views[str(args["user_id"])] = view
            return {"ok": True, "view": {"id": "V1", **view}}
        return {"ok": False, "error": "unknown_method"}

    def _missing(self, needed: str) -> dict[str, Any]:
        return {
            "ok": False,
            "error": "missing_scope",
            "needed": needed,
            "provided": ",".join(sorted(self.scopes)),
        }

    def _page(
        self,
        msgs: list[dict[str, Any]],
        args: dict[str, Any],
        include_meta: bool,
        *,
        channel: str | None,
        max_limit: int,
    ) -> dict[str, Any]:
        window = _window(args, max_limit, clamp=True)
        if isinstance(window, dict):
            return window
        start, limit = window
        page = [dict(m) for m in msgs[start : start + limit]]
        if not include_meta:
            for m in page:
                m.pop("metadata", None)
        more = start + limit < len(msgs)
        out: dict[str, Any] = {
            "ok": True,
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": _cursor(start + limit) if more else ""},
        }
        if channel is not None:
            out["channel"] = channel
        return out

    def _conversation(self, channel_id: str) -> dict[str, Any]:
        name = next(n for n, c in self.channels.items() if c == channel_id).lstrip("#")
        private = channel_id in self.private
        return {
            "id": channel_id,
            "name": name,
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_private": private,
            "is_archived": False,
            "is_member": True,
        }

    def _list(self, args: dict[str, Any]) -> dict[str, Any]:
        types = set(str(args.get("types") or "public_channel").split(","))
        if not types <= {"public_channel", "private_channel", "mpim", "im"}:
            return {"ok": False, "error": "invalid_types"}
        for kind, scope in (
            ("public_channel", "channels:read"),
            ("private_channel", "groups:read"),
        ):
            if kind in types and scope not in self.scopes:
                return self._missing(scope)
        window = _window(args, MAX_LIST_LIMIT, clamp=False)
        if isinstance(window, dict):
            return window
        start, limit = window
        wanted = [
            self._conversation(cid)
            for cid in sorted(set(self.channels.values()))
            if ("private_channel" if cid in self.private else "public_channel") in types
        ]
        # "Fewer than the requested number of items may be returned, even if the end of the list
        # hasn't been reached": a client must follow next_cursor, not count items.
        size = min(limit, self.list_page_cap)
        page = wanted[start : start + size]
        more = start + size < len(wanted)
        return {
            "ok": True,
            "channels": page,
            "response_metadata": {"next_cursor": _cursor(start + size) if more else ""},
        }

    def _check_content(self, args: dict[str, Any]) -> dict[str, Any] | None:
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except json.JSONDecodeError:
                return _invalid_blocks(["blocks is not valid JSON"])
        if not args.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        if len(str(args.get("text", ""))) > MAX_MESSAGE_TEXT:
            return {"ok": False, "error": "msg_too_long"}
        if blocks:
            problems = check_blocks(blocks, max_blocks=MAX_BLOCKS) + self.files.unknown_images(
                blocks
            )
            if problems:
                return _invalid_blocks(problems)
        return None


def _invalid_blocks(problems: list[str]) -> dict[str, Any]:
    return {
        "ok": False,
        "error": "invalid_blocks",
        "errors": problems,
        "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
    }


def _text_object(obj: Any, where: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"{where}: must be a text object"]
    if plain_only and obj["type"] != "plain_text":
        return [f"{where}: must be plain_text"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}.text: must be a non-empty string"]
    if len(text) > limit:
        return [f"{where}.text: must be at most {limit} characters, got {len(text)}"]
    return []


def _element(el: Any, where: str) -> list[str]:
    if not isinstance(el, dict):
        return [f"{where}: must be an object"]
    problems: list[str] = []
    kind = el.get("type")
    if len(str(el.get("action_id", ""))) > MAX_ACTION_ID:
        problems.append(f"{where}.action_id: must be at most {MAX_ACTION_ID} characters")
    if kind == "button":
        problems += _text_object(el.get("text"), f"{where}.text", MAX_BUTTON_TEXT, plain_only=True)
        if len(str(el.get("value", ""))) > MAX_ACTION_VALUE:
            problems.append(f"{where}.value: must be at most {MAX_ACTION_VALUE} characters")
        if len(str(el.get("url", ""))) > MAX_URL:
            problems.append(f"{where}.url: must be at most {MAX_URL} characters")
        elif "url" in el and not _valid_url(el["url"]):
            # Slack answers such a button with "invalid url [json-pointer:…/url]".
            problems.append(f"{where}.url: invalid url")
        if el.get("style") not in (None, "primary", "danger"):
            problems.append(f"{where}.style: must be primary or danger")
    elif kind == "static_select":
        if "placeholder" in el:
            problems += _text_object(
                el["placeholder"], f"{where}.placeholder", MAX_PLACEHOLDER, plain_only=True
            )
        options = el.get("options")
        if not isinstance(options, list) or not 1 <= len(options) <= MAX_OPTIONS:
            problems.append(f"{where}.options: must hold 1 to {MAX_OPTIONS} options")
        else:
            for i, opt in enumerate(options):
                problems += _text_object(
                    (opt or {}).get("text"),
                    f"{where}.options[{i}].text",
                    MAX_OPTION_TEXT,
                    plain_only=True,
                )
                value = (opt or {}).get("value")
                if not isinstance(value, str) or not 1 <= len(value) <= MAX_OPTION_VALUE:
                    problems.append(f"{where}.options[{i}].value: 1 to {MAX_OPTION_VALUE} chars")
    elif kind in ("plain_text", "mrkdwn"):
        problems += _text_object(el, where, MAX_TEXT)
    elif kind != "image":
        problems.append(f"{where}: unsupported element type {kind!r}")
    return problems


def check_blocks(blocks: Any, *, max_blocks: int) -> list[str]:
    """Validate Block Kit blocks against Slack's documented limits; return the problems found."""
    if not isinstance(blocks, list):
        return ["blocks: must be an array"]
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"blocks: at most {max_blocks} blocks, got {len(blocks)}")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict):
            problems.append(f"{where}: must be an object")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > MAX_BLOCK_ID:
                problems.append(f"{where}.block_id: must be at most {MAX_BLOCK_ID} characters")
            if block_id in block_ids:
                problems.append(f"{where}.block_id: duplicate {block_id!r}")
            block_ids.add(str(block_id))
        kind = block.get("type")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: a section needs text or fields")
            if "text" in block:
                problems += _text_object(block["text"], f"{where}.text", MAX_TEXT)
            fields = block.get("fields") or []
            if len(fields) > MAX_FIELDS:
                problems.append(f"{where}.fields: at most {MAX_FIELDS}")
            for j, f in enumerate(fields):
                problems += _text_object(f, f"{where}.fields[{j}]", MAX_FIELD_TEXT)
            if "accessory" in block:
                problems += _element(block["accessory"], f"{where}.accessory")
        elif kind == "header":
            problems += _text_object(
                block.get("text"), f"{where}.text", MAX_HEADER_TEXT, plain_only=True
            )
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                problems.append(f"{where}.elements: 1 to {MAX_CONTEXT_ELEMENTS} elements")
            else:
                for j, el in enumerate(elements):
                    problems += _element(el, f"{where}.elements[{j}]")
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
                problems.append(f"{where}.elements: 1 to {MAX_ACTIONS_ELEMENTS} elements")
            else:
                action_ids = [el.get("action_id") for el in elements if isinstance(el, dict)]
                if len([a for a in action_ids if a]) != len({a for a in action_ids if a}):
                    problems.append(f"{where}.elements: action_id must be unique in the block")
                for j, el in enumerate(elements):
                    problems += _element(el, f"{where}.elements[{j}]")
        elif kind == "image":
            problems += _image(block, where)
        elif kind != "divider":
            problems.append(f"{where}: unsupported block type {kind!r}")
    return problems


def _valid_url(url: Any) -> bool:
    """Whether Slack would take ``url`` as a link: a scheme and host, no spaces or controls."""
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return False
    try:
        parts = urlparse(url)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc)


def _image(block: dict[str, Any], where: str) -> list[str]:
    # Block Kit image block: alt_text required (up to 2,000), an optional plain_text title (up to
    # 2,000), and exactly one of image_url (up to 3,000) or slack_file ({"id"} or {"url"}).
    problems: list[str] = []
    alt = block.get("alt_text")
    if not isinstance(alt, str) or not alt or len(alt) > MAX_IMAGE_TEXT:
        problems.append(f"{where}.alt_text: required, at most {MAX_IMAGE_TEXT} characters")
    if "title" in block:
        problems += _text_object(block["title"], f"{where}.title", MAX_IMAGE_TEXT, plain_only=True)
    url, ref = block.get("image_url"), block.get("slack_file")
    if (url is None) == (ref is None):
        problems.append(f"{where}: exactly one of image_url and slack_file")
    elif url is not None and (not isinstance(url, str) or len(url) > MAX_URL):
        problems.append(f"{where}.image_url: a URL of at most {MAX_URL} characters")
    elif ref is not None and (not isinstance(ref, dict) or not (ref.get("id") or ref.get("url"))):
        problems.append(f"{where}.slack_file: needs id or url")
    return problems


def _make_handler(state: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            return

        def _args(self) -> dict[str, Any]:
            parsed = urlparse(self.path)
            args: dict[str, Any] = {k: v[0] for k, v in parse_qs(parsed.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                body = self.rfile.read(length).decode("utf-8")
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    args.update(json.loads(body))
                else:
                    args.update({k: v[0] for k, v in parse_qs(body).items()})
            for key in ("blocks", "metadata", "view"):
                if isinstance(args.get(key), str):
                    try:
                        args[key] = json.loads(args[key])
                    except json.JSONDecodeError:
                        pass
            return args

        def _reply(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            if urlparse(self.path).path.startswith("/response/"):
                self._response_url()
                return
            if "/upload/v1/" in urlparse(self.path).path:
                self._upload()
                return
            method = urlparse(self.path).path.rsplit("/", 1)[-1]
            args = self._args()
            auth = self.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else args.get("token")
            call = Call(method=method, args=args, token=token)
            with state.lock:
                state.calls.append(call)
                failure = next((f for f in state.failures if f[0] == method), None)
                if failure:
                    state.failures.remove(failure)
            if failure:
                _, status, retry_after = failure
                call.status = status or 599
                if status == 0:
                    # A stall: never answered before the client gives up, however loaded the
                    # machine (an event, not a sleep that might end before the client's timeout).
                    state.unstall.wait(max(retry_after, 60.0))
                    return
                headers = {"Retry-After": str(int(retry_after))} if status == 429 else {}
                self._reply(
                    status,
                    {"ok": False, "error": "ratelimited" if status == 429 else "fatal_error"},
                    headers,
                )
                return
            if token != state.token:
                self._reply(200, {"ok": False, "error": "invalid_auth" if token else "not_authed"})
                return
            with state.lock:
                result = state.handle(method, args)
            self._reply(200, result)

        def _upload(self) -> None:
            # The upload service: raw bytes (what slack_sdk sends) to the URL files.getUpload-
            # URLExternal gave; the file id is the URL's last part.
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            file_id = urlparse(self.path).path.rsplit("/", 1)[-1]
            with state.lock:
                known = state.files.upload(file_id, body)
            data = f"OK - {len(body)}".encode() if known else b"not found"
            self.send_response(200 if known else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _response_url(self) -> None:
            # Interactive payloads' response_url: JSON in, plain "ok" out, no token needed.
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.responses.append({"path": urlparse(self.path).path, **body})
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

    return Handler


class FakeServer(LocalServer):
    """The fake's HTTP server (the shared plumbing); shutting it down ends any stalled request."""

    def __init__(self, state: FakeSlack) -> None:
        """Bind 127.0.0.1 at a random port and serve in a daemon thread."""
        super().__init__(_make_handler(state), state.unstall.set)
        self.state = state


def serve_fake(state: FakeSlack) -> FakeServer:
    """Serve ``state`` on a random local port in a daemon thread; set ``state.url``."""
    server = FakeServer(state)
    state.url = f"{server.url}/api/"
    return server


def start_fake_slack(token: str = "xoxb-test-token") -> tuple[FakeSlack, FakeServer]:
    """Start the fake on 127.0.0.1 at a random port; returns the state and the server to shut down."""
    state = FakeSlack(token=token)
    return state, serve_fake(state)
