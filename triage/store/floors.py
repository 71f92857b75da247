"""Where the search for pending work starts: a floor per stage, below which nothing is pending.

Finding the items without a prediction (or without a route) joins them against every stored
result. On DuckDB that join reads the whole store on every run, and once its hash table outgrows
the memory limit it spills: on a store of six million items a run with nothing new spent about
seven seconds finding that out, against 0.35 s at a million. A floor per stage, ``seq`` in
``stage_floors``, holds that every item with ``items.seq`` at or under it has the stage's result,
so the reads look only above it (PostgreSQL's claims start their walk of ``items_seq`` there).

The floor is a shortcut, never the truth: it is recomputed from the rows themselves, it only moves
up, and it stops short of

- the first item above it that still lacks the stage's result, and
- any item stored within :data:`FLOOR_GUARD_SECONDS`.

The second rule is for writes still in flight. ``seq`` is taken when a row is inserted, not when
its transaction commits, so another ingest's batch may hold a lower ``seq`` that is not visible
yet. Ingest commits every batch within seconds; as long as no transaction that stores items stays
open for more than half the guard, such a batch's items are always above the floor.
"""

from __future__ import annotations

from typing import Literal

from triage.store.base import StoreBase

Stage = Literal["classify", "route"]

# The table whose row marks an item as done for each stage (keyed by ``item_id``).
STAGE_RESULTS: dict[str, str] = {"classify": "predictions", "route": "routes"}

FLOOR_GUARD_SECONDS = 3600
"""Items stored this recently never fall under a floor (see the module docstring)."""

FLOOR_WINDOW = 500_000
"""How many ``seq`` values one step of :meth:`FloorSection.advance_floor` looks at."""

FLOOR_WINDOWS = 20
"""At most this many steps a call: a floor far behind catches up over several runs."""


class FloorSection(StoreBase):
    """The floors under which each stage has nothing pending.

    Dialect: :meth:`_items_above` writes DuckDB's ``SEMI``/``ANTI JOIN``; a server backend writes
    ``EXISTS``/``NOT EXISTS``.
    """

    def _items_above(self, results: str, *, having: bool) -> str:
        """``items i`` above a floor, with (or without) a row in ``results``, for a ``FROM``.

        The text ends inside a ``WHERE`` whose first parameter is the floor (``i.seq > ?``), so
        callers add conditions with ``AND``.
        """
        # DuckDB hashes the small side of these joins, the items above the floor. Written as
        # [NOT] EXISTS it hashed the results instead: on six million items, 21 s instead of 5 s
        # with the floor still at the bottom, and out of memory under routing's 384MB.
        join = "SEMI" if having else "ANTI"
        return f"items i {join} JOIN {results} r ON r.item_id = i.id WHERE i.seq > ?"

    def pending_floor(self, stage: Stage) -> int:
        """The ``seq`` at or under which every item has ``stage``'s result (-1: none known)."""
        value = self._scalar("SELECT seq FROM stage_floors WHERE stage = ?", [stage])
        return -1 if value is None else int(value)

    def advance_floor(self, stage: Stage) -> int:
        """Raise ``stage``'s floor as far as the stored rows allow; return the floor now.

        Call it after the stage's results are committed. It reads only above the current floor,
        :data:`FLOOR_WINDOW` items at a time and at most :data:`FLOOR_WINDOWS` windows a call, so
        a store that predates the floors catches up over a few runs with little memory.
        """
        results = STAGE_RESULTS[stage]
        floor = self.pending_floor(stage)
        bounds = self._one(
            "SELECT max(seq) AS top, min(seq) FILTER (WHERE stored_at > now() - "
            f"INTERVAL '{int(FLOOR_GUARD_SECONDS)} seconds') AS recent FROM items WHERE seq > ?",
            [floor],
        )
        if bounds is None or bounds["top"] is None:
            return floor
        ceiling = int(bounds["top"]) if bounds["recent"] is None else int(bounds["recent"]) - 1
        candidate = floor
        for _ in range(FLOOR_WINDOWS):
            if candidate >= ceiling:
                break
            high = min(candidate + FLOOR_WINDOW, ceiling)
            # One window: DuckDB hashes its items, not the store's every result. Hashing all of
            # them at once ran out of memory right after routing six million items' worth.
            gap = self._scalar(
                f"SELECT min(i.seq) FROM {self._items_above(results, having=False)} "
                "AND i.seq <= ?",
                [candidate, high],
            )
            if gap is not None:
                candidate = int(gap) - 1
                break
            candidate = high
        if candidate <= floor:
            return floor
        # greatest(): two workers that raise the floor at once keep the higher of their answers.
        self._execute(
            "INSERT INTO stage_floors (stage, seq) VALUES (?, ?) ON CONFLICT (stage) DO UPDATE "
            "SET seq = greatest(stage_floors.seq, excluded.seq), updated_at = now()",
            [stage, int(candidate)],
        )
        return self.pending_floor(stage)
