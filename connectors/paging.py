"""The one page/watermark/quarantine loop of the social connectors (:func:`paginate`).

Every social API here answers newest first, stream by stream (a search, a timeline, a channel). A
connector states only where its pages are and how to read one record: a :class:`Stream` (path,
parameters, its stored position, its way of asking for the next page, and how to find the records
in an answer) and a parse function. The loop is the same for all of them:

* each page is yielded as one batch that carries the *old* cursor; the new cursor is yielded only
  after the last page of the last stream, so a crash part-way re-reads and never skips (README,
  "Social and community sources");
* a record the parse function cannot read goes to quarantine with its reason and a bounded copy;
* the stream's position decides what is new and where paging stops: :class:`Watermark` for streams
  ordered by time, :class:`HighestId` for streams ordered by id (``since_id``, ``last_id``, ``ts``);
* only positions that were checked move the stream or steer its paging: those of records that were
  read, and those of skipped records (joins, bot and moderator posts) whose connector vouched for
  them; a broken record's id is never trusted, nor is one that parses but that its connector
  finds cannot be real (:attr:`Entry.doubt`: a Mastodon id dated after the fetch, a Discourse
  post id far beyond the forum's others), which goes to quarantine with that reason;
* an item that two streams of one source both return is stored once;
* a stream cut short by ``max_pages`` says so in a note (:attr:`FetchBatch.notes`); a stream paged
  by id (:class:`BeforeLowest`) keeps its stored position and remembers the gap, and the next run
  reads on from there, so nothing in between is lost.

As in dlt's REST paginators, the paging state is a small object (:class:`PageNumber`,
:class:`NextToken`, :class:`BeforeLowest`) that turns the page just read into the parameters of the
next request, or None at the end. The cursor entries written here are the ones earlier versions
wrote, key for key (plus ``gap`` while a stream paged by id reads a backlog), so existing databases
carry on where they were.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

from connectors.base import ConnectorError, FetchBatch, SourceContext
from connectors.social_api import DEFAULT_MAX_PAGES, int_setting
from triage.models import InvalidRecord, Mention


class BadAnswer(Exception):
    """An answer without the records it should hold; the source fails (its cursor stays)."""


@dataclass(slots=True)
class Entry:
    """One record of a page, as the connector found it in the API's answer."""

    record: Any
    """What the parse function reads."""
    id: Any = None
    """The source's id of the record, kept with it in quarantine."""
    position: Any = None
    """Its place in an id-ordered stream (default: ``id``)."""
    raw: Any = None
    """What quarantine keeps when the record cannot be read (default: ``record``)."""
    skip: bool = False
    """Not stored (moderator notes, bot messages); moves the stream's position only if vouched."""
    vouched: bool = False
    """For a skipped entry: the connector checked its place as a read record's place is checked
    (a Slack ``ts`` that is a valid time, a Discourse post with a valid date), so it may move the
    stream's position and steer its paging."""
    ends: bool = True
    """Reaching the stored position at this record ends the stream (not so for a reply that
    sits under a newer thread)."""
    doubt: str | None = None
    """Why the record's id cannot be real, when its connector found so (an id that encodes a time
    after the fetch): the record goes to quarantine with this reason, and its place moves the
    stream's position and steers its paging no more than a broken record's, even when vouched
    for."""

    @property
    def place(self) -> Any:
        """The position the stream's mark orders by."""
        return self.id if self.position is None else self.position


def listed(key: str, id_key: str) -> Callable[[Any], list[Entry]]:
    """The usual way to find records: a list under ``key`` in a JSON object, ids at ``id_key``."""

    def entries(data: Any) -> list[Entry]:
        records = data.get(key) if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise BadAnswer(f"the answer has no '{key}' list")
        return [Entry(r, id=r.get(id_key) if isinstance(r, dict) else None) for r in records]

    return entries


class Verdict(Enum):
    """What a stream's mark says about one readable record."""

    NEW = "new"
    SEEN = "seen"  # taken by an earlier run
    PAST = "past"  # older than the stored position: the rest of the stream is too


class Mark(Protocol):
    """Where a stream was left, and what is new since."""

    def see(self, position: Any) -> None:
        """Note the position of a record that was read (id-ordered streams move past it)."""
        ...

    def behind(self, position: Any) -> bool:
        """True when a record sits at or below the stored position (known before parsing)."""
        ...

    def admit(self, created: datetime, external_id: str) -> Verdict:
        """Judge a parsed record; NEW ones are remembered for the next cursor."""
        ...

    def dump(self) -> Any:
        """The stream's cursor entry after this run, or None to leave it as it was."""
        ...


@dataclass
class Watermark:
    """Where a newest-first stream was left: the newest creation time seen and the ids at it.

    Items strictly newer than ``since`` are new; items at exactly ``since`` are new unless their id
    was already taken, so two posts in the same second are neither lost nor fetched twice.
    """

    since: datetime
    ids: set[str] = field(default_factory=set)
    newest: datetime | None = None
    newest_ids: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, cursor: Any, start: datetime) -> Watermark:
        """Rebuild from a stored cursor entry, or start at the backfill bound."""
        if isinstance(cursor, dict) and cursor.get("since"):
            since = datetime.fromisoformat(str(cursor["since"]))
            return cls(since=since, ids={str(i) for i in cursor.get("ids") or []})
        return cls(since=start)

    def is_new(self, created: datetime, external_id: str) -> bool:
        """True when an item was not taken by an earlier run."""
        if created > self.since:
            return True
        return created == self.since and external_id not in self.ids

    def older(self, created: datetime) -> bool:
        """True when a newest-first stream has gone past the watermark: stop paging."""
        return created < self.since

    def take(self, created: datetime, external_id: str) -> None:
        """Remember an item that is being stored in this run."""
        if self.newest is None or created > self.newest:
            self.newest, self.newest_ids = created, {external_id}
        elif created == self.newest:
            self.newest_ids.add(external_id)

    def see(self, position: Any) -> None:
        """Time-ordered streams learn their position from parsed records only."""

    def behind(self, position: Any) -> bool:
        """Nothing is known before a record's time is read."""
        return False

    def admit(self, created: datetime, external_id: str) -> Verdict:
        """PAST below the watermark, SEEN when taken before, else NEW (and taken)."""
        if self.older(created):
            return Verdict.PAST
        if not self.is_new(created, external_id):
            return Verdict.SEEN
        self.take(created, external_id)
        return Verdict.NEW

    def dump(self) -> dict[str, Any]:
        """The cursor entry to store once this run's items are durable."""
        if self.newest is None:
            return {"since": self.since.isoformat(), "ids": sorted(self.ids)}
        # Never past now: an item dated ahead (within the day allowed for clock skew) would put
        # every item published before its time behind the watermark. Held at now, it is read
        # again until the clock passes it, and its stable id keeps it stored once.
        newest = min(self.newest, datetime.now(UTC))
        if newest == self.since:
            ids = self.ids | self.newest_ids
        else:
            ids = self.newest_ids
        return {"since": newest.isoformat(), "ids": sorted(ids)}


@dataclass
class HighestId:
    """Where an id-ordered stream was left: the highest id seen, stored as ``{name: id}``.

    The API filters by that id itself (``since_id``, Slack's exclusive ``oldest``), or, for an API
    without such a filter, records at or below it end the stream. On a first run (nothing stored)
    records created before ``start`` end it, so the backfill reaches back only so far.
    """

    name: str
    stored: Any
    order: Callable[[Any], Any]
    """Sort key of an id, or None for an id that cannot be ordered."""
    start: datetime | None = None
    newest: Any = None

    def __post_init__(self) -> None:
        if self.newest is None:
            self.newest = self.stored

    def see(self, position: Any) -> None:
        """Move to ``position`` when it is higher than any seen so far."""
        key = self.order(position) if position is not None else None
        if key is None:
            return
        current = self.order(self.newest) if self.newest is not None else None
        if current is None or key > current:
            self.newest = position

    def behind(self, position: Any) -> bool:
        """True for an id at or below the stored one."""
        if self.stored is None or position is None:
            return False
        key, stored = self.order(position), self.order(self.stored)
        return key is not None and stored is not None and key <= stored

    def admit(self, created: datetime, external_id: str) -> Verdict:
        """PAST before the backfill bound of a first run, else NEW."""
        if self.start is not None and self.stored is None and created < self.start:
            return Verdict.PAST
        return Verdict.NEW

    def dump(self) -> dict[str, Any] | None:
        """``{name: highest id}``, or None when no id was ever seen."""
        return None if self.newest is None else {self.name: self.newest}

    def hold(self, key: str, gap: dict[str, Any]) -> dict[str, Any]:
        """The cursor entry of a stream cut short before its stored id.

        It keeps the stored id, so the unread posts below the last page stay new, and puts at
        ``key`` where to read on (``gap``) with the newest id seen, to be taken once they are read.
        """
        entry: dict[str, Any] = {} if self.stored is None else {self.name: self.stored}
        entry[key] = {**gap, "newest": self.newest}
        return entry


class Pager(Protocol):
    """How a stream asks for its next page."""

    def next(
        self, params: dict[str, Any], data: Any, entries: list[Entry]
    ) -> dict[str, Any] | None:
        """The parameters of the next request, or None when the stream has no more pages."""
        ...


@dataclass(frozen=True)
class PageNumber:
    """Numbered pages from 0, while the answer's ``total`` says there are more (Algolia)."""

    param: str = "page"
    total: str = "nbPages"

    def next(
        self, params: dict[str, Any], data: Any, entries: list[Entry]
    ) -> dict[str, Any] | None:
        """The next page number, until an empty page or the last one."""
        pages = data.get(self.total) if isinstance(data, dict) else None
        page = int(params[self.param])
        if not entries or not isinstance(pages, int) or page + 1 >= pages:
            return None
        return {**params, self.param: page + 1}


@dataclass(frozen=True)
class NextToken:
    """An opaque token from the answer, sent back as ``param`` (``after``, ``cursor``...)."""

    param: str
    token: Callable[[Any], Any]
    """Reads the token from the answer; None or empty at the end."""

    def next(
        self, params: dict[str, Any], data: Any, entries: list[Entry]
    ) -> dict[str, Any] | None:
        """The same request with the answer's token, until there is none."""
        token = self.token(data)
        return {**params, self.param: token} if token else None


@dataclass(frozen=True)
class BeforeLowest:
    """Pages that go back below the lowest id of the page just read (``max_id``, ``before``)."""

    param: str
    order: Callable[[Any], Any]

    def next(
        self, params: dict[str, Any], data: Any, entries: list[Entry]
    ) -> dict[str, Any] | None:
        """The lowest orderable id of ``entries``, until there is none.

        The page loop passes the entries whose position was checked (see :func:`paginate`).
        """
        ids = [e.place for e in entries if e.place is not None and self.order(e.place) is not None]
        if not ids:
            return None
        lowest = min(ids, key=self.order)
        bound = params.get(self.param)
        bound_key = None if bound is None else self.order(bound)
        if bound_key is not None and self.order(lowest) >= bound_key:
            # The answer ignored the bound (the same page again): asking on would repeat it up
            # to max_pages times and never get below it.
            return None
        return {**params, self.param: lowest}


@dataclass
class Stream:
    """One newest-first stream of a source: where its pages are and where it was left."""

    key: str | None
    """Its entry in the source's cursor; None when the cursor is this one stream's position."""
    path: str
    params: dict[str, Any]
    """The first request's parameters."""
    mark: Mark
    pager: Pager
    entries: Callable[[Any], list[Entry]]
    """Finds the records in one answer; raises BadAnswer when it has the wrong shape."""


Parse = Callable[[Entry, datetime], Mention | tuple[Mention, datetime]]


def paginate(
    ctx: SourceContext,
    cursor: Any,
    streams: Iterable[Stream],
    get: Callable[[str, dict[str, Any]], Any],
    parse: Parse,
) -> Iterator[FetchBatch]:
    """Read every stream page by page and yield the batches, the new cursor last.

    Args:
        ctx: The configured source (``max_pages`` comes from its settings).
        cursor: The stored cursor, passed on with every page until the last.
        streams: The source's streams, read one after the other.
        get: Sends one request: ``get(path, params)`` returns the decoded answer.
        parse: Reads one entry into a mention, or into a mention and the time the stream is
            ordered by when that is not ``created_at``; raises InvalidRecord.

    Yields:
        One batch per page with the old cursor, then an empty batch with the new one (and a note
        for each stream that ``max_pages`` cut short).
    """
    max_pages = int_setting(ctx, "max_pages", DEFAULT_MAX_PAGES)
    state: dict[str, Any] = dict(cursor) if isinstance(cursor, dict) else {}
    final: Any = state
    seen: set[str] = set()  # an item two streams return is stored once
    notes: list[str] = []
    for stream in streams:
        gap = _gap(stream, _entry(cursor, stream.key))
        params = stream.params if gap is None else {**stream.params, gap.param: gap.before}
        left = yield from _pages(ctx, cursor, stream, params, get, parse, max_pages, seen)
        position = _position(stream, gap, left)
        if left is not None:
            notes.append(_cut_note(stream, max_pages, resumed=_resumable(stream)))
        if stream.key is None:
            final = cursor if position is None else position
        elif position is not None:
            state[stream.key] = position
    yield FetchBatch(cursor=final, notes=notes)


GAP = "gap"
"""The key, in a stream's cursor entry, of the older pages ``max_pages`` left for the next run."""


@dataclass(frozen=True)
class Gap:
    """Where a stream paged by id was cut short: the next run reads on from ``before``."""

    param: str
    """The pager's parameter (``max_id``, ``before``)."""
    before: Any
    """Its value for the first unread page."""
    newest: Any
    """The position the stream had reached above the gap; it becomes the stored one once the
    gap is read."""


def _entry(cursor: Any, key: str | None) -> Any:
    """A stream's entry in the stored cursor (the whole cursor for a stream without a key)."""
    if key is None:
        return cursor
    return cursor.get(key) if isinstance(cursor, dict) else None


def _resumable(stream: Stream) -> bool:
    # Only a gap bounded by ids can be read on later: a page token may expire (the source would
    # then fail on every run), and a page number shifts as new posts arrive.
    return isinstance(stream.pager, BeforeLowest) and isinstance(stream.mark, HighestId)


def _gap(stream: Stream, entry: Any) -> Gap | None:
    """The gap an earlier run left in this stream, when its cursor entry holds a sound one."""
    pager, mark = stream.pager, stream.mark
    if not isinstance(pager, BeforeLowest) or not isinstance(mark, HighestId):
        return None
    gap = entry.get(GAP) if isinstance(entry, dict) else None
    if not isinstance(gap, dict):
        return None
    before, newest = gap.get(pager.param), gap.get("newest")
    # An entry edited by hand must not steer requests: without a sound gap the stream is read
    # from the top down to its stored position, which loses nothing either.
    if before is None or pager.order(before) is None:
        return None
    if newest is not None and mark.order(newest) is None:
        return None
    return Gap(pager.param, before, newest)


def _position(stream: Stream, gap: Gap | None, left: dict[str, Any] | None) -> Any:
    """The stream's cursor entry after this run (None: leave it as it was)."""
    mark = stream.mark
    if isinstance(mark, HighestId) and isinstance(stream.pager, BeforeLowest):
        if gap is not None:
            mark.see(gap.newest)
        if left is not None:
            # The pages below are still unread: keep the stored id, so they stay new, and say
            # where to read on; the newest id reached is taken once they are read.
            return mark.hold(GAP, {stream.pager.param: left[stream.pager.param]})
    return mark.dump()


def _cut_note(stream: Stream, max_pages: int, resumed: bool) -> str:
    label = stream.key or stream.path
    head = f"stream '{label}' stopped at max_pages after {max_pages} page(s)"
    if resumed:
        # Paged by id, the API does not say whether a further page holds anything.
        return (
            f"{head}, maybe with older new posts left: the next run reads on from there before "
            f"it looks for newer ones; raise max_pages to read such a backlog in one run"
        )
    return (
        f"{head} with more new pages left: the older new items on them were not fetched and "
        f"will not be; raise max_pages for this source"
    )


def _pages(
    ctx: SourceContext,
    cursor: Any,
    stream: Stream,
    params: dict[str, Any],
    get: Callable[[str, dict[str, Any]], Any],
    parse: Parse,
    max_pages: int,
    seen: set[str],
) -> Generator[FetchBatch, None, dict[str, Any] | None]:
    """Yield the stream's pages; return the next request's parameters if max_pages cut it short."""
    mark = stream.mark
    for _ in range(max_pages):
        data = get(stream.path, params)
        try:
            entries = stream.entries(data)
        except BadAnswer as exc:
            raise ConnectorError(f"source '{ctx.name}': {stream.path}: {exc}") from None
        batch = FetchBatch(cursor=cursor)
        fetched_at = datetime.now(UTC)
        done = False
        checked: list[Entry] = []  # entries whose position may move the mark and steer paging
        for entry in entries:
            if mark.behind(entry.place):
                done = done or entry.ends
                continue
            if entry.skip:
                # Skipped records are no one's voice, but their place counts: ignored, every bot
                # message or join after the last human post would be fetched again on every run
                # (forever, in a channel where only a bot speaks). Taken unchecked, one with a
                # bogus place (a join at a Slack ts in 2286, a moderator post with id 10^12)
                # would put every later post behind the cursor. So it counts only when its
                # connector checked it as a read record's place is checked; otherwise it is
                # fetched again, and skipped again, until a newer post passes it.
                if entry.vouched and entry.doubt is None:
                    mark.see(entry.place)
                    checked.append(entry)
                continue
            if entry.doubt is not None:
                # A record that reads well but whose id cannot be real (an API glitch) would,
                # as the highest id, put every later post behind the cursor. It is kept with the
                # reason, like a record that cannot be read; later runs read it again, and the
                # quarantine keeps one copy.
                raw = entry.record if entry.raw is None else entry.raw
                batch.rejected.append(ctx.reject(entry.doubt, raw, entry.id))
                continue
            try:
                read = parse(entry, fetched_at)
            except InvalidRecord as exc:
                # Its position is not trusted either: a broken record with a bogus high id (a
                # Slack ts in the year 2286) would put every later post behind the cursor. Left
                # below it, the record is read again until a newer post passes it, and the
                # quarantine keeps one copy of the same record with the same reason.
                raw = entry.record if entry.raw is None else entry.raw
                batch.rejected.append(ctx.reject(str(exc), raw, entry.id))
                continue
            mark.see(entry.place)
            checked.append(entry)
            mention, ordered_at = read if isinstance(read, tuple) else (read, read.created_at)
            verdict = mark.admit(ordered_at, mention.external_id)
            if verdict is Verdict.PAST:
                done = done or entry.ends
            if verdict is not Verdict.NEW or mention.external_id in seen:
                continue
            seen.add(mention.external_id)
            batch.mentions.append(mention)
        yield batch
        # Nor does a broken record steer the next request: its out-of-order low id would send
        # max_id/before below the posts in between, which would never be read. A page with no
        # checked entry falls back to all of them, the only lead left (stopping there would
        # lose every page below it).
        following = None if done else stream.pager.next(params, data, checked or entries)
        if following is None:
            return None
        params = following
    return params
