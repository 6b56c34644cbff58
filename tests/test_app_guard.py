"""What an os-ken handler raises is logged, counted and survived, not fatal to the event loop."""

from os_ken.lib import hub

from sdnvirt.controller.app import SdnvirtApp
from sdnvirt.events import Events, Handler, Kind
from sdnvirt.metrics import Metrics


class FakeApp:
    def __init__(self):
        self.metrics, self.event_hub = Metrics(), Events()

    _failed = SdnvirtApp._failed


def test_a_failing_handler_is_counted_and_does_not_end_the_event_loop():
    # Why the guard exists: with the native hub, os-ken's event loop re-raises
    # TaskExit, which is every Exception, and its thread ends without a word.
    assert hub.TaskExit is Exception
    app, calls = FakeApp(), []

    def _port_desc(ev):
        calls.append(ev)
        raise KeyError("boom")
    guarded = SdnvirtApp._guarded(app, _port_desc)
    guarded("ev1")
    guarded("ev2")
    assert calls == ["ev1", "ev2"]
    assert app.metrics.handler_errors.labels(Handler.OPENFLOW.value)._value.get() == 2
    assert [e.fields for e in app.event_hub.since(kinds=[Kind.HANDLER_ERROR]).events] == [{"handler": "openflow"}] * 2
