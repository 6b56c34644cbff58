"""Schemathesis against /v1/openapi.json of a real daemon: no input makes it fail,
with the admin token or a tenant's."""

import subprocess
import sys
from pathlib import Path

from test_api import tenants_doc

from sdnvirt.emulation import lab


def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(tmp_path):
    doc = {"controller": {"openflow": {"address": "127.0.0.1", "port": lab.free_port()}}, **tenants_doc()}
    ctl = lab.ControllerProcess(doc, tmp_path / "daemon").start()
    try:
        # The tenant's run first: the admin's may delete the tenant.
        tenant_token = ctl.api().post("/tokens", {"tenant": "blue"})["token"]
        for name, token in (("tenant", tenant_token), ("admin", ctl.api().token)):
            # Path parameters fixed to an existing tenant and service, so that
            # generated bodies reach validation and the store, not only 404s; the
            # events' long-poll held short of schemathesis' 10 s request timeout.
            settings = tmp_path / f"schemathesis-{name}.toml"
            settings.write_text(f'headers = {{ Authorization = "Bearer {token}" }}\n'
                                'parameters = { "path.tenant" = "blue", "path.service" = "web", "query.wait" = 0.5 }\n')
            res = subprocess.run(
                [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(settings), "run",
                 f"http://127.0.0.1:{ctl.api_port}/v1/openapi.json", "--max-examples", "10", "--seed", "1",
                 "--workers", "2", "--no-color", "--checks", "not_a_server_error,status_code_conformance,"
                 "response_schema_conformance,content_type_conformance"],
                capture_output=True, text=True, timeout=300, cwd=tmp_path)
            assert res.returncode == 0, name + "\n" + res.stdout[-6000:] + res.stderr[-2000:]
        assert ctl.proc.poll() is None
        assert ctl.metric("sdnvirt_handler_errors_total") == 0, ctl.log_tail()
    finally:
        ctl.stop()
