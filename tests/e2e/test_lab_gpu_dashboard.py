"""GPU dashboards (issue 30, item 2: jupyterlab-nvdashboard, the ``gpu-dashboard`` lab feature) on a real hub.

On a GPU profile the feature puts nvdashboard's plots in the lab where NVIDIA's management library answers; on a
machine without a driver (this one, and CI) it stays off, with a note: in the server's log, in the lab's page config
(``hpclabFeaturesOff``) and in ``hpclab-hub check``'s notes for a local backend. What is asserted follows what the
machine really has: with a driver the same test asserts the dashboards are on.
"""

from __future__ import annotations

import json
import re

import pytest

from hpclab.lab_features import gpu_driver_problem
from support.hubtools import hub_yaml, login, started_hub, stop_server

pytestmark = [pytest.mark.hub]


def test_the_gpu_dashboards_are_on_with_a_driver_and_off_with_a_note_without(tmp_path):
    problem = gpu_driver_problem()
    profiles = [
        {"slug": "gpu-1", "display_name": "GPU", "backend": "local", "cpus": 1, "gpus": 1, "groups": ["gpu-users"],
         "lab_features": ["gpu-dashboard"], "default": True},
    ]
    with started_hub(tmp_path / "hub", hub_yaml(tmp_path / "state", profiles=profiles), accounts=("alice",)) as hub:
        from hpclab_hub.config import load_deployment
        from hpclab_hub.host_notes import deployment_notes

        notes = [note for note in deployment_notes(load_deployment(hub.config_path)) if "gpu-dashboard" in note]
        alice = login(hub, "alice")
        assert alice.post_spawn("alice", "gpu-1").status_code == 302
        try:
            alice.wait_ready("alice")
            lab = alice.http.get(hub.user_url("alice") + "lab")
            config = json.loads(re.search(r'id="jupyter-config-data" type="application/json">(.*?)</script>', lab.text, re.S).group(1))
            offered = [entry["name"] for entry in config["federated_extensions"]]
            if problem:
                assert "no NVIDIA driver" in problem
                assert "jupyterlab-nvdashboard" not in offered and "jupyterlab-nvdashboard" in config["disabledExtensions"]
                assert config["hpclabFeaturesOff"] == {"gpu-dashboard": problem}
                assert "hpclab lab features: gpu-dashboard is off: no NVIDIA driver" in hub.log_path.read_text()
                assert notes == [f"profile 'gpu-1' asks for the gpu-dashboard lab feature, but {problem}"]
            else:
                assert "jupyterlab-nvdashboard" in offered and "jupyterlab-nvdashboard" not in config["disabledExtensions"]
                assert config["hpclabFeaturesOff"] == {} and notes == []
        finally:
            stop_server(alice, "alice")
