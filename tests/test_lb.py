"""Maglev table balance and disruption; the health state machine."""

from collections import Counter

import pytest

from sdnvirt.lb.health import Health
from sdnvirt.lb.maglev import DEFAULT_SIZE, table


def shares(slots):
    counts = Counter(slots)
    return {b: n / len(slots) for b, n in counts.items()}


def test_every_slot_is_filled_by_a_backend_of_positive_weight():
    t = table({"a": 1, "b": 3, "c": 0})
    assert len(t) == DEFAULT_SIZE and set(t) == {"a", "b"}


@pytest.mark.parametrize("weights", [
    {"a": 1, "b": 1}, {"a": 2, "b": 1}, {f"b{i}": 1 for i in range(7)},
    {"a": 5, "b": 3, "c": 1, "d": 1},
])
def test_shares_follow_weights_within_a_few_percent(weights):
    got = shares(table(weights))
    total = sum(weights.values())
    for b, w in weights.items():
        assert abs(got[b] - w / total) < 0.02, (b, got[b], w / total)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_removing_one_backend_moves_only_its_share(n):
    weights = {f"10.0.0.{i}:80": 1 for i in range(n)}
    before = table(weights)
    gone = "10.0.0.1:80"
    after = table({b: w for b, w in weights.items() if b != gone})
    moved = [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y and x != gone]
    # Maglev promises near-minimal disruption: a few slots of others may move.
    assert len(moved) <= 0.06 * DEFAULT_SIZE, len(moved)
    assert all(before[i] == gone for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y and i not in moved)


def test_adding_a_backend_only_hands_slots_to_the_newcomer():
    weights = {f"b{i}": 1 for i in range(4)}
    before, after = table(weights), table({**weights, "new": 1})
    reshuffled = [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y and y != "new"]
    assert len(reshuffled) <= 0.06 * DEFAULT_SIZE
    assert abs(after.count("new") / DEFAULT_SIZE - 0.2) < 0.02


def test_the_table_is_the_same_in_every_process():
    assert table({"x": 1, "y": 2}) == table({"y": 2, "x": 1})


def test_no_backend_gives_an_empty_table():
    assert table({}) == [] and table({"a": 0}) == []


def test_table_size_must_be_prime():
    with pytest.raises(ValueError, match="prime"):
        table({"a": 1}, size=250)


def test_health_falls_after_fall_failures_and_rises_after_rise_successes():
    h = Health(rise=2, fall=3)
    assert h.up
    assert not h.record(False, "timeout") and not h.record(False, "timeout")
    assert h.record(False, "RST") and not h.up
    assert not h.record(True, "SYN-ACK", 0.001)
    assert h.record(True, "SYN-ACK", 0.002) and h.up
    assert h.last_latency == 0.002 and h.results == {"success": 2, "failure": 3}


def test_a_success_between_failures_resets_the_count():
    h = Health(rise=1, fall=2)
    h.record(False, "timeout")
    h.record(True, "ok")
    assert not h.record(False, "timeout") and h.up


def test_force_down_is_immediate():
    h = Health(rise=2, fall=2)
    assert h.force_down("port down") and not h.up and h.last_reason == "port down"
    assert not h.force_down("again")
