"""The controller's events, for clients that follow it: long-poll with a cursor.

A client keeps the ``last`` id of each answer and asks for what comes after
it; ``wait`` holds the request until something does (at most MAX_WAIT s, a
thread of the API's pool meanwhile).  ``missed`` says events after the
cursor are gone from the daemon's ring (or belong to an earlier run of it):
the client must re-read the state it follows, through the other endpoints.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..events import Kind, missed
from .deps import EventsDep, PrincipalDep
from .schemas import Event, EventsPage

router = APIRouter(tags=["daemon"])
MAX_WAIT = 30.0


@router.get("/events", response_model=EventsPage)
def list_events(
        events: EventsDep, who: PrincipalDep,
        after: Annotated[int, Query(ge=0, description="the `last` of the previous answer; 0: no cursor yet")] = 0,
        kind: Annotated[list[Kind] | None, Query(description="only these kinds (repeatable)")] = None,
        wait: Annotated[float, Query(ge=0, description=f"seconds to wait for one (capped at {MAX_WAIT:g})")] = 0.0):
    """The events after ``after``, oldest first; waits up to ``wait`` seconds while there are none.
    A tenant token gets only the events that name its tenant."""
    def own(event) -> bool:
        return event.fields.get("tenant") == who.tenant
    page = events.since(after, kind, min(wait, MAX_WAIT), None if who.admin else own)
    return EventsPage(events=[Event(**e.as_dict()) for e in page.events], last=page.last, oldest=page.oldest,
                      missed=missed(after, page))
