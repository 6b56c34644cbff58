"""The hypervisor agent's safety rails (its moves are tested on a real fabric)."""

import os

import pytest

from sdnvirt.emulation.vmports import _processes_in


def test_it_never_freezes_the_processes_of_its_own_namespace():
    with pytest.raises(RuntimeError, match="not a VM's"):
        _processes_in(os.getpid())
