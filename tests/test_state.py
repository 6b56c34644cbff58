"""The effective config with writers besides itself: two ConfigStates on one
store file, as two daemons (or instances) sharing it would be."""

import threading

import pytest
from fastapi import HTTPException

from sdnvirt import config
from sdnvirt.api.errors import apply_change
from sdnvirt.emulation.lab import wait_for
from sdnvirt.state import ATTEMPTS, ConfigState
from sdnvirt.store import Conflict, SQLiteStore, StoreError

BLUE = "tenants:\n  blue:\n    segment: 101\n    subnet: 10.1.0.0/24\n"
WEB1 = "    vms: {web1: {mac: '02:00:00:00:01:04', ip: 10.1.0.11}}\n"
WEB4 = {"mac": "02:00:00:00:01:04", "ip": "10.1.0.14", "host": None, "memory": 512}
WEB5 = {**WEB4, "mac": "02:00:00:00:01:05", "ip": "10.1.0.15"}


class Instance:
    """A ConfigState on the shared store, with what it applied and the reloads it reported."""

    def __init__(self, tmp_path, name: str, text: str, **store):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        self.store = SQLiteStore(tmp_path / "sdnvirt.db", poll=0.01, **store)
        self.state = ConfigState(path, config.load(path), self.store, retry_after=0.01)
        self.applied: list[config.Config] = []
        self.reloads: list[bool] = []
        self.state.apply, self.state.reloaded = self.applied.append, self.reloads.append
        self.thread: threading.Thread | None = None

    def follow(self) -> "Instance":
        self.thread = threading.Thread(target=self.state.follow, daemon=True)
        self.thread.start()
        return self

    def vms(self) -> set[str]:
        return set(self.state.config.tenants["blue"].vms)

    def caught_up(self) -> bool:
        """Its watch has read the store up to the store's revision."""
        watch = self.state._watch
        return watch is not None and watch._after == self.store.revision()

    def close(self) -> None:
        self.state.stop()
        if self.thread is not None:
            self.thread.join(5)
            assert not self.thread.is_alive()
        self.store.close()


@pytest.fixture
def instances(tmp_path):
    made: list[Instance] = []

    def make(name: str, text: str = BLUE, **store) -> Instance:
        made.append(Instance(tmp_path, name, text, **store))
        return made[-1]
    yield make
    for inst in made:
        inst.close()


def test_a_change_made_elsewhere_is_applied_and_its_own_only_once(instances):
    a, b = instances("a").follow(), instances("b")
    b.state.change(lambda ch: ch.set("vm", "blue/web4", WEB4))
    assert wait_for(lambda: a.applied, 5, 0.01)
    assert set(a.applied[-1].tenants["blue"].vms) == {"web4"} and a.vms() == {"web4"}
    assert a.state.origin("vm", "blue/web4") == "api" and a.reloads == [True]
    a.state.change(lambda ch: ch.set("vm", "blue/web5", WEB5))
    assert wait_for(a.caught_up, 5, 0.01)
    assert len(a.applied) == 2 and a.vms() == {"web4", "web5"} and a.reloads == [True]
    # Deleting is a change too.
    b.state.change(lambda ch: ch.set("vm", "blue/web4", None))
    assert wait_for(lambda: a.vms() == {"web5"}, 5, 0.01) and len(a.applied) == 3


def test_a_change_made_elsewhere_that_does_not_fit_is_refused_and_the_config_stays(instances):
    a = instances("a", BLUE + WEB1).follow()
    b = instances("b")
    before = a.state.config
    # Valid over b's file, but web1 of a's file has this MAC already.
    b.state.change(lambda ch: ch.set("vm", "blue/web4", WEB4))
    assert wait_for(lambda: a.reloads, 5, 0.01) == [False]
    assert a.applied == [] and a.state.config is before
    # While the stored changes do not fit its file, a's own changes are refused too, saying why.
    with pytest.raises(config.ConfigError, match="MAC 02:00:00:00:01:04 is already used"):
        a.state.change(lambda ch: ch.set("vm", "blue/web5", WEB5))
    # Once they fit again, a follows.
    b.state.change(lambda ch: ch.set("vm", "blue/web4", {**WEB4, "mac": "02:00:00:00:01:09"}))
    assert wait_for(lambda: a.reloads == [False, True], 5, 0.01)
    assert a.vms() == {"web1", "web4"} and len(a.applied) == 1


def test_two_writers_never_overwrite_each_other(instances):
    a, b = instances("a"), instances("b")      # neither follows: a's view is stale
    b.state.change(lambda ch: ch.set("vm", "blue/web4", WEB4))
    a.state.change(lambda ch: ch.set("vm", "blue/web5", WEB5))
    # a lost the race, read b's change (applying it), and made its own over it.
    assert [set(c.tenants["blue"].vms) for c in a.applied] == [{"web4"}, {"web4", "web5"}]
    assert set(instances("c").state.config.tenants["blue"].vms) == {"web4", "web5"}
    # An edit that no longer fits once the other writer's change is read is refused.
    b.state.change(lambda ch: ch.set("vm", "blue/web6", {**WEB4, "mac": "02:00:00:00:01:06",
                                                         "ip": "10.1.0.16"}))
    with pytest.raises(config.ConfigError, match="10.1.0.16 is already used"):
        a.state.change(lambda ch: ch.set("vm", "blue/web7", {**WEB5, "mac": "02:00:00:00:01:07",
                                                             "ip": "10.1.0.16"}))


def test_a_writer_that_keeps_losing_gets_a_conflict(instances):
    a, b = instances("a"), instances("b")
    store = a.store
    memory = iter(range(600, 700))

    class Busy:
        """a's store, with b changing the config just before each of a's commits."""
        def __getattr__(self, name):
            return getattr(store, name)

        def commit(self, ops, compares=None):
            b.state.change(lambda ch: ch.set("vm", "blue/web4", {**WEB4, "memory": next(memory)}))
            return store.commit(ops, compares)
    a.state.store = Busy()
    with pytest.raises(Conflict):
        a.state.change(lambda ch: ch.set("vm", "blue/web5", WEB5))
    assert len(b.applied) == ATTEMPTS and "web5" not in instances("c").vms()
    # The API answers it with a 409.
    with pytest.raises(HTTPException) as err:
        apply_change(a.state, lambda ch: ch.set("vm", "blue/web5", WEB5))
    assert err.value.status_code == 409 and "try again" in err.value.detail


def test_a_follower_whose_history_was_compacted_reads_everything_again(instances, caplog):
    a = instances("a")
    b = instances("b", history=2)
    for n in range(4):
        b.state.change(lambda ch, n=n: ch.set("vm", "blue/web4", {**WEB4, "memory": 256 + n}))
    a.follow()
    assert wait_for(lambda: a.applied, 5, 0.01)
    assert a.state.config.tenants["blue"].vms["web4"].memory == 259
    assert "compacted" in caplog.text
    b.state.change(lambda ch: ch.set("vm", "blue/web5", WEB5))
    assert wait_for(lambda: a.vms() == {"web4", "web5"}, 5, 0.01)


def test_a_store_that_fails_is_watched_again(instances, caplog):
    a, b = instances("a"), instances("b")
    store = a.store
    failures = iter([StoreError("disk on fire")])

    class Flaky:
        def __getattr__(self, name):
            return getattr(store, name)

        def watch(self, prefix, after):
            failure = next(failures, None)
            if failure is not None:
                raise failure
            return store.watch(prefix, after)
    a.state.store = Flaky()
    a.follow()
    b.state.change(lambda ch: ch.set("vm", "blue/web4", WEB4))
    assert wait_for(lambda: a.vms() == {"web4"}, 5, 0.01)
    assert "disk on fire" in caplog.text


def test_stopping_does_not_wait_for_a_change_under_way(instances):
    a = instances("a").follow()
    assert wait_for(lambda: a.state._watch, 5, 0.01)
    with a.state.lock:              # a change being applied, however long it takes
        a.state.stop()
        a.thread.join(5)
        assert not a.thread.is_alive()
