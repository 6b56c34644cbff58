"""The Mininet CLI of ``sdnvirt topo``, with ``migrate``."""

from __future__ import annotations

from mininet.cli import CLI
from mininet.log import error, output

from ..api.client import ApiError
from ..migration import describe


class Console(CLI):
    """Mininet's CLI plus ``migrate VM HYPERVISOR [live|cold]``, carried out by the agent."""

    def __init__(self, net, agent, timeout: float, **kwargs):
        # CLI.__init__ runs the command loop: everything it needs is set first.
        self.agent = agent
        self.timeout = timeout
        super().__init__(net, **kwargs)

    def do_migrate(self, line: str) -> None:
        """migrate VM HYPERVISOR [live|cold]: move VM to HYPERVISOR (a switch) while
        the controller keeps its network; prints the migration's record."""
        args = line.split()
        if self.agent is None:
            error("migrate: no hypervisor agent (the controller's API token could not be read)\n")
            return
        if len(args) not in (2, 3) or (len(args) == 3 and args[2] not in ("live", "cold")):
            error("usage: migrate VM HYPERVISOR [live|cold]\n")
            return
        try:
            rec = self.agent.request(*args)
            rec = self.agent.wait(rec["id"], self.timeout)
        except ApiError as err:
            error(f"migrate: {err}\n")
            return
        output(describe(rec) + "\n")

