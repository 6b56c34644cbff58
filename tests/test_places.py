"""Where the VMs are, and its index the other way: the same answers as a scan, whatever the changes."""

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from sdnvirt.model import Location, Places

NAMES = [f"vm{i}" for i in range(6)]
LOCS = [Location(d, p) for d in (1, 2) for p in (1, 2, 3)]
CHANGES = st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from(NAMES), st.sampled_from(LOCS)),
    st.tuples(st.just("del"), st.sampled_from(NAMES)),
    st.tuples(st.just("pop"), st.sampled_from(NAMES)),
    st.tuples(st.just("update"), st.dictionaries(st.sampled_from(NAMES), st.sampled_from(LOCS), max_size=3)),
    st.tuples(st.just("setdefault"), st.sampled_from(NAMES), st.sampled_from(LOCS)),
    st.tuples(st.just("popitem")),
    st.tuples(st.just("clear"))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(CHANGES)
def test_the_index_answers_as_a_scan_would(changes):
    places, scan = Places(), {}
    for change in changes:
        if change[0] == "set":
            places[change[1]] = scan[change[1]] = change[2]
        elif change[0] == "del" and change[1] in scan:
            del places[change[1]], scan[change[1]]
        elif change[0] == "pop":
            assert places.pop(change[1], None) == scan.pop(change[1], None)
        elif change[0] == "update":
            places.update(change[1])
            scan.update(change[1])
        elif change[0] == "setdefault":
            assert places.setdefault(change[1], change[2]) == scan.setdefault(change[1], change[2])
        elif change[0] == "popitem" and scan:
            assert places.popitem() == scan.popitem()
        elif change[0] == "clear":
            places.clear()
            scan.clear()
        assert dict(places) == scan
        for loc in LOCS:
            holders = [name for name, where in scan.items() if where == loc]
            assert (places.at(loc) is None) == (not holders) and (not holders or places.at(loc) in holders)
        for dpid in (1, 2):
            on = places.on(dpid)
            assert set(on) == {loc.port for loc in scan.values() if loc.dpid == dpid}
            assert all(scan[name] == Location(dpid, port) for port, name in on.items())
    again = copy.deepcopy(places)
    assert dict(again) == scan and all(again.at(loc) == places.at(loc) for loc in LOCS)
