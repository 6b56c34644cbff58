"""The store contract, run against every implementation: the embedded one
(SQLite) and the one several controllers share (etcd, a real one-member
cluster started for the module; each test starts on an empty key space).
"""

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sdnvirt.emulation.etcdlab import EtcdLab
from sdnvirt.store import ABSENT, Compacted, Conflict, Delete, EtcdStore, Event, Put, SQLiteStore, Store, keys

WAIT = 5.0      # seconds a watch gets to report a change; it takes a poll interval


@dataclass
class Backend:
    open: Callable[[], Store]       # another client of the same store
    opener: str                     # Python source that opens one, for another process
    opened: list = field(default_factory=list)


@pytest.fixture(scope="module")
def etcd():
    if shutil.which("etcd") is None:
        pytest.skip("needs etcd (Debian package etcd-server; scripts/setup.sh installs it)")
    with EtcdLab(1) as cluster:
        yield cluster.endpoints


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        b = Backend(lambda: None, f"__import__('sdnvirt.store').store.SQLiteStore({str(path)!r})")

        def open_store() -> Store:
            return SQLiteStore(path, poll=0.01)
    else:
        endpoints = request.getfixturevalue("etcd")
        b = Backend(lambda: None, f"__import__('sdnvirt.store').store.EtcdStore({endpoints!r})")

        def open_store() -> Store:
            return EtcdStore(endpoints)
        open_store().commit([Delete(key) for key in open_store().list("").items])

    def opened() -> Store:
        store = open_store()
        b.opened.append(store)
        return store
    b.open = opened
    yield b
    for store in b.opened:
        store.close()


@pytest.fixture
def store(backend):
    return backend.open()


def collect(watch, count: int) -> list[Event]:
    """The first ``count`` events the watch yields (from a thread: a hung watch fails the test, not the run)."""
    events: list[Event] = []
    done = threading.Event()

    def run():
        for batch in watch:
            events.extend(batch)
            if len(events) >= count:
                break
        done.set()
    threading.Thread(target=run, daemon=True).start()
    assert done.wait(WAIT), f"the watch reported only {events}"
    return events


def test_revisions_count_transactions_and_keys_keep_create_and_mod_revisions(store):
    start = store.revision()
    r1 = store.put("/t/a", {"n": 1})
    assert r1 == start + 1 and store.get("/t/a") == ({"n": 1}, r1, r1)
    r2 = store.put("/t/a", {"n": 2})
    assert r2 == r1 + 1 and store.get("/t/a") == ({"n": 2}, r2, r1)
    r3 = store.delete("/t/a")
    assert r3 == r2 + 1 and store.get("/t/a") is None
    assert store.delete("/t/a") == r3 == store.revision()      # nothing changed: no revision
    r4 = store.put("/t/a", "again")
    assert store.get("/t/a") == ("again", r4, r4)              # created anew


def test_a_listing_holds_the_prefix_only_at_one_revision(store):
    store.commit([Put("/t/a/1", 1), Put("/t/a/2", [2]), Put("/t/ab", 3), Put("/t/b/1", None)])
    listing = store.list("/t/a/")
    assert {k: item.value for k, item in listing.items.items()} == {"/t/a/1": 1, "/t/a/2": [2]}
    assert listing.revision == store.revision()
    assert set(store.list("/t/").items) == {"/t/a/1", "/t/a/2", "/t/ab", "/t/b/1"}
    assert store.list("/nothing/") == ({}, store.revision())


def test_compare_and_set_on_the_mod_revision(store):
    rev = store.put("/t/a", 1, expect=ABSENT)
    with pytest.raises(Conflict) as err:
        store.put("/t/a", 2, expect=ABSENT)
    assert err.value.keys == ["/t/a"]
    with pytest.raises(Conflict):
        store.put("/t/a", 2, expect=rev - 1)
    with pytest.raises(Conflict):
        store.delete("/t/a", expect=rev + 1)
    assert store.get("/t/a").value == 1 and store.revision() == rev
    rev = store.put("/t/a", 2, expect=rev)
    with pytest.raises(Conflict):
        store.put("/t/b", 1, expect=rev)                       # absent is at no revision
    store.delete("/t/a", expect=rev)
    assert store.get("/t/a") is None


def test_a_transaction_writes_everything_at_one_revision_or_nothing(store):
    guard = store.put("/t/guard", 0)
    rev = store.commit([Put("/t/a", 1), Put("/t/b", 2, expect=ABSENT), Delete("/t/none")], {"/t/guard": guard})
    assert rev == guard + 1
    assert {k: (i.value, i.revision) for k, i in store.list("/t/").items.items()} == \
        {"/t/guard": (0, guard), "/t/a": (1, rev), "/t/b": (2, rev)}
    store.put("/t/guard", 1)
    with pytest.raises(Conflict) as err:
        store.commit([Put("/t/a", 9), Delete("/t/b")], {"/t/guard": guard, "/t/c": ABSENT})
    assert err.value.keys == ["/t/guard"]
    assert store.get("/t/a").value == 1 and store.get("/t/b").value == 2
    with pytest.raises(ValueError, match="twice"):
        store.commit([Put("/t/a", 1), Delete("/t/a")])


def test_a_watch_reports_every_change_after_its_revision_whole_transactions_in_order(store):
    before = store.put("/t/old", 0)
    store.commit([Put("/t/a", 1), Put("/t/b", 2), Put("/other/x", 3)])
    watch = store.watch("/t/", before)
    try:
        first = collect(watch, 2)
        assert [(e.key, e.value, e.deleted) for e in first] == [("/t/a", 1, False), ("/t/b", 2, False)]
        assert first[0].revision == first[1].revision == before + 1
        threading.Timer(0.05, lambda: store.commit([Delete("/t/a"), Put("/t/c", 3)])).start()
        later = collect(watch, 2)
        assert [(e.key, e.value, e.deleted) for e in later] == [("/t/a", None, True), ("/t/c", 3, False)]
        assert later[0].revision == store.revision()
    finally:
        watch.cancel()


def test_a_watch_sees_another_clients_and_another_processs_changes(backend):
    store, other = backend.open(), backend.open()
    watch = store.watch("/t/", store.revision())
    try:
        other.put("/t/from-a-client", 1)
        code = f"{backend.opener}.put('/t/from-a-process', {{'pid': 1}})"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
        assert [(e.key, e.value) for e in collect(watch, 2)] == [("/t/from-a-client", 1),
                                                                 ("/t/from-a-process", {"pid": 1})]
    finally:
        watch.cancel()


def test_a_cancelled_watch_ends_at_once(store):
    watch = store.watch("/t/", store.revision())
    ended = threading.Event()
    thread = threading.Thread(target=lambda: (list(watch), ended.set()), daemon=True)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    watch.cancel()
    assert ended.wait(WAIT) and time.monotonic() - started < 1.0


def test_a_watch_into_compacted_history_says_so_and_a_listing_recovers(store):
    start = store.put("/t/a", 1)
    for n in range(2, 6):
        store.put("/t/a", n)
    store.compact(start + 2)
    with pytest.raises(Compacted) as err:
        next(iter(store.watch("/t/", start)))
    assert err.value.after == start and err.value.compacted == start + 2
    # Listing again gives the values, and a revision to watch from.
    listing = store.list("/t/")
    assert listing.items["/t/a"].value == 5
    watch = store.watch("/t/", listing.revision)
    try:
        store.put("/t/a", 6)
        assert [e.value for e in collect(watch, 1)] == [6]
    finally:
        watch.cancel()
    assert [e.value for e in next(iter(store.watch("/t/", start + 1)))] == [3, 4, 5, 6]
    with pytest.raises(ValueError):
        store.compact(store.revision() + 1)


def test_ids_from_two_clients_taking_turns_are_never_the_same(backend):
    a, b = backend.open(), backend.open()

    class Interleaved:
        """Client ``a``, except that ``b`` takes an id between a's first read of
        the counter and its write, for each id ``a`` takes."""
        def __getattr__(self, name):
            return getattr(a, name)

        def get(self, key):
            item = a.get(key)
            reads.append(key)
            if len(reads) % 2:
                got.append(keys.next_id(b, key))
            return item
    reads: list[str] = []
    got: list[int] = []
    mine = [keys.next_id(Interleaved(), keys.MIGRATION_ID) for _ in range(3)]
    # Each of a's first attempts lost to b, and its second won.
    assert got == [1, 3, 5] and mine == [2, 4, 6] and len(reads) == 6


def test_ids_taken_at_once_by_many_threads_and_clients_are_all_different(backend):
    clients = [backend.open() for _ in range(2)]
    got: list[int] = []

    def take(client):
        for _ in range(20):
            got.append(keys.next_id(client, keys.MIGRATION_ID))
    threads = [threading.Thread(target=take, args=(c,)) for c in clients for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 81))
