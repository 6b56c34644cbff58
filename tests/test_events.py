"""The event hub: ids, the bound, waiting for new events, many writers."""

import threading
import time
from pathlib import Path

import pytest

from sdnvirt.events import Cause, Claim, Events, Found, Handler, Kind, LinkDown, Source, Step, missed


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ids_grow_by_one_from_the_start_time_and_events_carry_the_clock():
    clock = Clock()
    hub = Events(clock=clock)
    assert hub.last() == 1000 * 1_000_000
    first = hub.publish(Kind.SWITCH_CONNECTED, dpid="0000000000000001")
    clock.now = 1001.5
    second = hub.publish(Kind.BACKEND_DOWN, tenant="blue", service="web", backend="b1:80", cause=Cause.NO_ANSWER)
    assert second == first + 1 == hub.last()
    page = hub.since()
    assert [e.id for e in page.events] == [first, second] and page.oldest == first and page.last == second
    assert page.events[1].as_dict() == {"id": second, "time": 1001.5, "kind": "backend_down", "fields": {
        "tenant": "blue", "service": "web", "backend": "b1:80", "cause": "no_answer"}}


def test_fields_are_small_values_only():
    hub = Events(clock=Clock())
    with pytest.raises(TypeError, match="fields"):
        hub.publish(Kind.CONFIG_APPLIED, fields=["a", "b"])
    with pytest.raises(ValueError):
        hub.publish("no such kind")


def test_since_a_cursor_and_of_some_kinds():
    hub = Events(clock=Clock())
    a = hub.publish(Kind.LINK_UP)
    cursor = hub.last()
    b = hub.publish(Kind.VM_LOCATED, vm="web1")
    c = hub.publish(Kind.LINK_UP)
    assert [e.id for e in hub.since(cursor).events] == [b, c]
    page = hub.since(a, kinds=[Kind.VM_LOCATED])
    assert [e.id for e in page.events] == [b] and page.last == c
    assert hub.since(c).events == [] and not missed(c, hub.since(c))


def test_the_ring_keeps_the_last_n_and_says_when_a_cursor_fell_off_it():
    hub = Events(keep=3, clock=Clock())
    ids = [hub.publish(Kind.LINK_UP, n=i) for i in range(5)]
    page = hub.since(ids[0])
    assert [e.id for e in page.events] == ids[2:] and page.oldest == ids[2]
    assert missed(ids[0], page)
    assert not missed(ids[1], hub.since(ids[1])) and not missed(0, hub.since(0))


def test_a_cursor_of_an_earlier_run_is_missed_whichever_way_its_clock_was():
    earlier = Events(clock=Clock(1000.0))
    for _ in range(5):
        earlier.publish(Kind.LINK_UP)
    restarted = Events(clock=Clock(1001.0))
    restarted.publish(Kind.LINK_UP)
    assert missed(earlier.last(), restarted.since(earlier.last()))
    behind = Events(clock=Clock(999.0))
    only = behind.publish(Kind.LINK_UP)
    page = behind.since(earlier.last())
    assert missed(earlier.last(), page) and [e.id for e in page.events] == [only]


def test_since_waits_for_a_new_event_of_the_kinds_asked_for():
    hub = Events()
    cursor = hub.last()
    started = time.monotonic()
    assert hub.since(cursor, timeout=0.1).events == []
    assert time.monotonic() - started >= 0.1

    def later():
        time.sleep(0.05)
        hub.publish(Kind.LINK_UP)
        time.sleep(0.05)
        hub.publish(Kind.VM_LOST, vm="web1")
    threading.Thread(target=later).start()
    started = time.monotonic()
    page = hub.since(cursor, kinds=[Kind.VM_LOST], timeout=5)
    assert [e.kind for e in page.events] == [Kind.VM_LOST] and time.monotonic() - started < 2


def test_many_writers_never_share_an_id():
    hub = Events(keep=100_000)
    threads = [threading.Thread(target=lambda: [hub.publish(Kind.LINK_UP) for _ in range(500)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [e.id for e in hub.since().events]
    assert len(ids) == 4000 and ids == sorted(set(ids)) and ids[-1] - ids[0] == 3999


def test_docs_events_md_names_every_kind_and_every_word_a_field_may_take():
    text = (Path(__file__).parent.parent / "docs" / "events.md").read_text()
    for kind in Kind:
        assert f"| `{kind.value}` |" in text, kind
    for enum in (Found, Claim, Cause, LinkDown, Step, Handler, Source):
        for word in enum:
            assert f"`{word.value}`" in text, word


def test_a_reader_may_see_only_the_events_it_is_shown():
    """A tenant token's view (api/events.py): a long poll waits for one of its own events."""
    hub = Events(clock=Clock())
    hub.publish(Kind.VM_LOCATED, vm="db1", tenant="red", dpid="1", port=3, how=Found.LEARNT)

    def blue(event) -> bool:
        return event.fields.get("tenant") == "blue"
    page = hub.since(0, None, 0.0, blue)
    assert page.events == [] and page.last == hub.last()
    timer = threading.Timer(0.05, lambda: (hub.publish(Kind.CONFIG_APPLIED, source=Source.API, tenants=2, vms=5),
                                           hub.publish(Kind.VM_LOST, vm="web1", tenant="blue", migration=1)))
    timer.start()
    page = hub.since(page.last, None, 10.0, blue)
    timer.join()
    assert [e.fields["vm"] for e in page.events] == ["web1"]
