"""The shapes of the requests Slack sends the review app, checked before anything acts on them.

A request that passed the signature check still has to fit one of these models (built from
Slack's interactivity, slash command and Events API payload references) before it reaches Bolt
or the decision spool: a signed but malformed payload (``"user": "U1"``, ``"actions": "x"``,
``"selected_option": "x"``) is answered 400 with the reason instead of raising somewhere inside.
Unknown extra fields are allowed, because Slack adds fields over time.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from triage.limits import SLACK_ACTION_ID, SLACK_BLOCK_ID, SLACK_VALUE

Id = Annotated[StrictStr, Field(min_length=1, max_length=255)]
Url = Annotated[StrictStr, Field(min_length=1, max_length=3000, pattern=r"^https?://")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Ref(_Model):
    """An object Slack identifies by ``id`` (team, enterprise, channel, user)."""

    id: Id


class User(Ref):
    """The user who acted."""

    username: StrictStr | None = None
    name: StrictStr | None = None
    team_id: StrictStr | None = None


class Container(_Model):
    """Where the interaction happened."""

    type: StrictStr
    message_ts: StrictStr | None = None
    channel_id: StrictStr | None = None
    is_ephemeral: StrictBool | None = None


class Message(_Model):
    """The message that carried the clicked element."""

    ts: StrictStr | None = None
    thread_ts: StrictStr | None = None
    user: StrictStr | None = None


class SelectedOption(_Model):
    """The chosen option of a select menu."""

    value: Annotated[StrictStr, Field(max_length=SLACK_VALUE)]


class Action(_Model):
    """One action of a ``block_actions`` payload."""

    action_id: Annotated[StrictStr, Field(min_length=1, max_length=SLACK_ACTION_ID)]
    block_id: Annotated[StrictStr, Field(max_length=SLACK_BLOCK_ID)] | None = None
    type: StrictStr | None = None
    value: Annotated[StrictStr, Field(max_length=SLACK_VALUE)] | None = None
    # Slack sends ``null`` when a select menu is cleared: no decision, not an error.
    selected_option: SelectedOption | None = None
    action_ts: StrictStr | None = None


class _Envelope(_Model):
    """Fields Bolt reads from every payload to build its context: typed, so it cannot trip."""

    team: Ref | StrictStr | None = None
    enterprise: Ref | StrictStr | None = None
    channel: Ref | StrictStr | None = None
    user: Ref | StrictStr | None = None
    authorizations: list[dict[str, Any]] | None = None
    is_enterprise_install: StrictBool | None = None
    is_ext_shared_channel: StrictBool | None = None
    team_id: StrictStr | None = None
    enterprise_id: StrictStr | None = None
    user_id: StrictStr | None = None
    channel_id: StrictStr | None = None
    thread_ts: StrictStr | None = None
    response_url: Url | None = None
    response_urls: list[dict[str, Any]] | None = None
    view: dict[str, Any] | None = None
    token: StrictStr | None = None
    api_app_id: StrictStr | None = None


class BlockActions(_Envelope):
    """A click on a button or a choice in a menu of one of our messages."""

    type: Literal["block_actions"]
    user: User  # type: ignore[assignment]
    actions: Annotated[list[Action], Field(min_length=1, max_length=25)]
    container: Container | None = None
    message: Message | None = None
    trigger_id: StrictStr | None = None


class View(_Model):
    """A modal or Home tab view."""

    id: Id
    type: StrictStr
    callback_id: StrictStr | None = None
    state: dict[str, Any] | None = None


class ViewPayload(_Envelope):
    """``view_submission`` / ``view_closed``: the app opens no modals, but the shape is checked."""

    type: Literal["view_submission", "view_closed"]
    user: User  # type: ignore[assignment]
    view: View  # type: ignore[assignment]


class SlashCommand(_Envelope):
    """A ``/triage`` invocation (a form, not JSON)."""

    command: Annotated[StrictStr, Field(pattern=r"^/[^\s]{1,32}$")]
    user_id: Id
    text: StrictStr = ""
    response_url: Url
    trigger_id: StrictStr | None = None
    user_name: StrictStr | None = None


class UrlVerification(_Model):
    """Slack's one-time check of the request URL."""

    type: Literal["url_verification"]
    challenge: Annotated[StrictStr, Field(min_length=1, max_length=1000)]
    token: StrictStr | None = None


class Event(_Model):
    """The inner event of an ``event_callback``."""

    type: Annotated[StrictStr, Field(min_length=1)]
    user: Ref | StrictStr | None = None
    channel: Ref | StrictStr | None = None
    team: StrictStr | None = None
    user_team: StrictStr | None = None
    item: dict[str, Any] | None = None
    message: dict[str, Any] | None = None
    previous_message: dict[str, Any] | None = None
    thread_ts: StrictStr | None = None
    tab: StrictStr | None = None
    event_ts: StrictStr | None = None


class AppHomeOpened(Event):
    """The one event the app subscribes to."""

    type: Literal["app_home_opened"]
    user: Id  # type: ignore[assignment]


class EventCallback(_Envelope):
    """An Events API delivery."""

    type: Literal["event_callback"]
    event: Event
    event_id: StrictStr | None = None
    event_time: StrictInt | None = None


class InvalidPayload(ValueError):
    """A signed request whose body does not fit what Slack sends."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"{where}: {err.get('msg', 'invalid')}"


def check_interactive(payload: Any) -> dict[str, Any]:
    """Validate a decoded interactivity ``payload``; return it unchanged.

    Raises:
        InvalidPayload: With the first problem found.
    """
    if not isinstance(payload, dict):
        raise InvalidPayload("payload: must be a JSON object")
    kind = payload.get("type")
    model: type[_Model]
    if kind == "block_actions":
        model = BlockActions
    elif kind in ("view_submission", "view_closed"):
        model = ViewPayload
    else:
        raise InvalidPayload(f"payload.type: unsupported interaction {str(kind)[:40]!r}")
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidPayload(f"payload.{_first_error(exc)}") from exc
    return payload


def check_event(body: Any) -> dict[str, Any]:
    """Validate an Events API body (``url_verification`` or ``event_callback``); return it."""
    if not isinstance(body, dict):
        raise InvalidPayload("body: must be a JSON object")
    try:
        if body.get("type") == "url_verification":
            UrlVerification.model_validate(body)
        elif body.get("type") == "event_callback":
            EventCallback.model_validate(body)
            if isinstance(body["event"], dict) and body["event"].get("type") == "app_home_opened":
                AppHomeOpened.model_validate(body["event"])
        else:
            raise InvalidPayload(f"type: unsupported event body {str(body.get('type'))[:40]!r}")
    except ValidationError as exc:
        raise InvalidPayload(_first_error(exc)) from exc
    return body


def check_request(body: str, content_type: str) -> None:
    """Check a signed request body as Slack would send it; Bolt may then parse it safely.

    Args:
        body: The raw body, decoded as UTF-8.
        content_type: The request's ``Content-Type``.

    Raises:
        InvalidPayload: When it is neither an interaction, a slash command nor an event.
    """
    # Bolt reads a body that opens with '{' as JSON whatever its Content-Type, so it is checked
    # as JSON too: a form check would pass a `payload` field that Bolt never looks at.
    if content_type.split(";")[0].strip().lower() == "application/json" or body.startswith("{"):
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidPayload("body: not valid JSON") from exc
        check_event(decoded)
        return
    form = parse_qs(body, keep_blank_values=True, max_num_fields=100)
    if any(len(values) != 1 for values in form.values()):
        raise InvalidPayload("form: every field must appear once")
    fields = {k: v[0] for k, v in form.items()}
    if "payload" in fields:
        try:
            payload = json.loads(fields["payload"])
        except (ValueError, RecursionError) as exc:
            raise InvalidPayload("payload: not valid JSON") from exc
        check_interactive(payload)
    elif "command" in fields:
        try:
            SlashCommand.model_validate(fields)
        except ValidationError as exc:
            raise InvalidPayload(_first_error(exc)) from exc
    elif fields.get("ssl_check") == "1":
        return  # Slack's certificate probe for slash commands; Bolt answers it
    else:
        raise InvalidPayload("form: neither an interaction payload nor a slash command")


def check_socket_mode(kind: str, payload: Any) -> None:
    """Check a Socket Mode envelope's payload (``interactive``, ``slash_commands``, ``events_api``).

    Raises:
        InvalidPayload: When it does not fit, so it is acknowledged and dropped, not dispatched.
    """
    if kind == "interactive":
        check_interactive(payload)
    elif kind == "events_api":
        check_event(payload)
    elif kind == "slash_commands":
        if not isinstance(payload, dict):
            raise InvalidPayload("payload: must be an object")
        try:
            SlashCommand.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayload(_first_error(exc)) from exc
    else:
        raise InvalidPayload(f"unsupported Socket Mode request type {kind[:40]!r}")
