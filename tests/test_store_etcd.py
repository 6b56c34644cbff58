"""What the etcd store adds to the contract (leases) and the faults its client
must survive, on a real three-member etcd: a dead endpoint, a watch whose
member dies, no endpoint at all."""

import contextlib
import http.server
import json
import shutil
import socket
import threading

import pytest
from test_store_contract import collect

from sdnvirt import cli
from sdnvirt.emulation.etcdlab import EtcdLab
from sdnvirt.emulation.lab import free_port, wait_for
from sdnvirt.store import Delete, EtcdStore, LeaseExpired, Put, SQLiteStore, StoreError, Unconfirmed, keys
from sdnvirt.store.etcd_http import Gateway, endpoint


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("etcd") is None:
        pytest.skip("needs etcd (Debian package etcd-server; scripts/setup.sh installs it)")
    with EtcdLab(3) as lab:
        yield lab


def test_a_leased_key_lives_while_renewed_and_goes_with_its_lease(cluster):
    store = EtcdStore(cluster.endpoints)
    lease = store.grant(2)
    store.put_leased("/lease/a", {"owner": "ctl1"}, lease)
    assert store.keepalive(lease) == 2.0
    assert store.get("/lease/a").value == {"owner": "ctl1"}
    store.revoke(lease)
    assert store.get("/lease/a") is None
    with pytest.raises(LeaseExpired):
        store.keepalive(lease)
    store.revoke(lease)     # gone already: nothing to do


def test_a_dead_endpoint_is_passed_over_and_none_alive_is_a_clear_error(cluster):
    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdStore([dead, *cluster.endpoints])
    store.put("/rotate/a", 1)
    assert store.get("/rotate/a").value == 1
    with pytest.raises(StoreError, match=f"etcd unreachable.*{dead}"):
        EtcdStore([dead])
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        endpoint("127.0.0.1:2379")


def test_a_watch_whose_member_dies_goes_on_from_its_last_revision_on_another(cluster):
    victim = cluster.members[0]
    watcher = EtcdStore([victim.url, *cluster.endpoints[1:]])
    writer = EtcdStore(cluster.endpoints[1:])
    watch = watcher.watch("/w/", writer.revision())
    try:
        writer.put("/w/before", 1)
        assert [e.key for e in collect(watch, 1)] == ["/w/before"]
        cluster.kill(victim)
        threading.Timer(0.2, lambda: writer.put("/w/after", 2)).start()
        assert [e.key for e in collect(watch, 1)] == ["/w/after"]
    finally:
        watch.cancel()
        cluster.restart(victim)


def test_a_write_a_member_without_quorum_took_is_unconfirmed_and_one_no_member_took_is_refused(cluster):
    assert wait_for(lambda: cluster.healthy() and all(m.proc.poll() is None for m in cluster.members), 10)
    leader = cluster.leader()
    others = [m for m in cluster.members if m is not leader]
    taker, refused = EtcdStore([leader.url], timeout=0.5), EtcdStore([m.url for m in others], timeout=0.5)
    for member in others:
        cluster.kill(member)
    try:
        # The leader takes the write into its log and cannot commit it: no answer comes.
        with pytest.raises(Unconfirmed, match="may still apply it"):
            taker.put("/unconfirmed/a", 1)
        with pytest.raises(StoreError):
            # The store's kept connection to a killed member fails after the request went out, which
            # counts as a member that may have taken it; a read drops that connection.
            refused.get("/unconfirmed/b")
        with pytest.raises(StoreError) as err:
            refused.put("/unconfirmed/b", 1)
        assert not isinstance(err.value, Unconfirmed), err.value
    finally:
        for member in others:
            cluster.restart(member)
    # Under load the members elect a leader again only after their restart ("leader changed").
    assert wait_for(cluster.healthy, 10)
    store = EtcdStore(cluster.endpoints)
    assert store.get("/unconfirmed/b") is None


def test_store_copy_moves_an_embedded_state_into_etcd_and_back_and_never_overwrites(cluster, tmp_path):
    sqlite = SQLiteStore(tmp_path / "sdnvirt.db")
    doc = {"tenant": {"segment": 100}, "nested": [1, {"a": None}]}
    sqlite.commit([Put(keys.config_key("tenant", "red"), doc), Put(keys.MIGRATION_ID, 7),
                   Put(keys.migration_key(7), {"vm": "web1"})])
    etcd = f"etcd:{','.join(cluster.endpoints)}"
    EtcdStore(cluster.endpoints).commit([Delete(key) for key in EtcdStore(cluster.endpoints).list("/sdnvirt/").items])
    assert cli.main(["store", "copy", "--from", f"sqlite:{tmp_path / 'sdnvirt.db'}", "--to", etcd]) == 0
    copied = EtcdStore(cluster.endpoints).list("/sdnvirt/").items
    assert {k: i.value for k, i in copied.items()} == {k: i.value for k, i in sqlite.list("/sdnvirt/").items.items()}
    assert keys.next_id(EtcdStore(cluster.endpoints), keys.MIGRATION_ID) == 8
    # Into a store that holds state already: refused, nothing written.
    assert cli.main(["store", "copy", "--from", f"sqlite:{tmp_path / 'sdnvirt.db'}", "--to", etcd]) == 1
    assert cli.main(["store", "copy", "--from", etcd, "--to", f"sqlite:{tmp_path / 'back.db'}"]) == 0
    back = SQLiteStore(tmp_path / "back.db").list("/sdnvirt/").items
    assert back[keys.config_key("tenant", "red")].value == doc and back[keys.MIGRATION_ID].value == 8
    assert cli.main(["store", "copy", "--from", "mysql:x", "--to", etcd]) == 1


def test_a_cluster_member_whose_etcd_is_unreachable_says_which_endpoints_and_fails(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "sdnvirt.yaml"
    path.write_text(f"controller:\n  cluster: {{name: ctl1, etcd: [{dead}]}}\n  state_dir: {tmp_path}\n")
    assert cli.main(["controller", "--check-config", str(path)]) != 0
    assert f"cannot read the store etcd at {dead} (controller.cluster.etcd): etcd unreachable" in capsys.readouterr().err


class Silent:
    """An endpoint that takes requests and never answers (a member without its quorum)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.held = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])


def answering(status, body):
    """An endpoint that answers every POST with ``status`` and the JSON ``body``."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_after_a_member_may_have_taken_a_write_another_members_compare_failure_or_refusal_is_unconfirmed():
    silent = Silent()
    failed, failed_url = answering(200, {"header": {"revision": "7"}})      # a txn whose compare failed
    refusing, refusing_url = answering(400, {"error": "etcdserver: bad request", "code": 3})
    try:
        with pytest.raises(Unconfirmed, match="a compare failed"):
            Gateway([silent.url, failed_url], timeout=0.3).call("/v3/kv/txn", {})
        with pytest.raises(Unconfirmed, match="bad request"):
            Gateway([silent.url, refusing_url], timeout=0.3).call("/v3/kv/txn", {})
        # A read is only a read, and a compare failure with no earlier attempt is a plain lost race.
        assert Gateway([silent.url, failed_url], timeout=0.3).call("/v3/kv/range", {})["header"]
        assert Gateway([failed_url], timeout=0.3).call("/v3/kv/txn", {})["header"]
    finally:
        failed.shutdown()
        refusing.shutdown()
        silent.sock.close()
