"""Issue 31, item 3: a knowledge base in the hub. Every shipped example carries its metadata; the page lists them,
filters by technology, field, tool, kernel and words, and "Open" starts the example in a profile the user may use
that fits it (the YAML's choice where allowed), never in one their groups do not allow."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from bs4 import BeautifulSoup

from hpclab_hub.config.errors import ConfigError
from hpclab_hub.config.loader import load_deployment, parse_deployment
from hpclab_hub.web.knowledge_base import catalogue, profile_for
from support.hubtools import hub_yaml, login, started_hub, stop_server
from support.paths import REPO_ROOT

KEYS = ("title", "summary", "technologies", "field", "tools", "contact")
EXPERT = "Dr. A. Expert <a.expert@example.org>"


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_every_shipped_example_carries_its_knowledge_base_metadata(path):
    notebook = json.loads(path.read_text())
    meta = notebook["metadata"]["hpclab"]
    assert all(meta.get(key) for key in KEYS), (path.name, {k: meta.get(k) for k in KEYS})
    assert isinstance(meta["technologies"], list) and isinstance(meta["tools"], list)
    assert notebook["metadata"]["kernelspec"]["name"]  # the kernel comes from the kernelspec


def _yaml(tmp_path: Path, entries: list[dict]) -> str:
    return json.dumps(
        {
            "auth": {"groups": {"gpu-users": ["ana"]}},
            "backends": {"local": {"type": "local", "gpus": ["g0"]}},
            "profiles": [
                {"slug": "small", "display_name": "Small", "backend": "local", "kernels": ["josephson", "mri"]},
                {"slug": "large", "display_name": "Large", "backend": "local", "cpus": 2},
                {"slug": "gpu", "display_name": "GPU", "backend": "local", "gpus": 1, "groups": ["gpu-users"]},
            ],
            "knowledge_base": {"entries": entries},
        }
    )


def test_the_catalogue_is_the_notebooks_with_the_yamls_entries_over_them(tmp_path):
    deployment = parse_deployment(
        _yaml(tmp_path, [{"path": "resnet-horovod.ipynb", "profile": "gpu", "gpus": 1, "contact": EXPERT}]), tmp_path
    )
    examples = {e.path: e for e in catalogue(deployment)}
    assert set(examples) == {p.name for p in (REPO_ROOT / "notebooks").glob("*.ipynb")}
    resnet = examples["resnet-horovod.ipynb"]
    assert (resnet.kernel, resnet.profile, resnet.gpus, resnet.contact) == ("dl", "gpu", 1, EXPERT)
    assert "Horovod" in resnet.technologies and resnet.title == "Data-parallel ResNet training with Horovod"
    assert resnet.matches({"technology": "horovod"}) and not resnet.matches({"field": "Neuroimaging"})
    assert examples["mri-datalad.ipynb"].matches({"field": "Neuroimaging", "tool": "DataLad"}, "dataset")
    # ana may use the GPU profile the YAML names; bob may not, and no other profile he may use has a GPU
    assert profile_for(resnet, deployment, frozenset({"gpu-users"}))[0].slug == "gpu"
    profile, why = profile_for(resnet, deployment, frozenset())
    assert profile is None and why == "No profile you may use offers the dl kernel and 1 GPU; ask your site's administrators."
    # without a profile of its own: the first the user may use that offers its kernel
    assert profile_for(examples["josephson-sweep.ipynb"], deployment, frozenset())[0].slug == "small"
    assert profile_for(examples["volume-windows.ipynb"], deployment, frozenset())[0].slug == "large"  # small lacks dl


def test_bad_entries_are_refused_with_their_key(tmp_path):
    with pytest.raises(ConfigError) as refused:
        parse_deployment(_yaml(tmp_path, [{"path": "../secrets.ipynb"}]), tmp_path)
    assert "knowledge_base.entries[0].path" in str(refused.value) and "inside the examples folder" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        parse_deployment(_yaml(tmp_path, [{"path": "resnet-horovod.ipynb", "field": "x", "fields": "y"}]), tmp_path)
    assert "knowledge_base.entries[0].fields: unknown key" in str(refused.value)
    (tmp_path / "site.yaml").write_text(_yaml(tmp_path, [{"path": "missing.ipynb", "title": "Missing"}]))
    with pytest.raises(ConfigError) as refused:
        load_deployment(tmp_path / "site.yaml")
    assert "knowledge_base.entries[0].path: no such notebook in the examples folder" in str(refused.value)


# --- a real hub ------------------------------------------------------------------------------------------------


def _page(client, hub, **filters) -> BeautifulSoup:
    response = client.http.get(f"{hub.url}/hub/hpclab/examples", params=filters)
    assert response.status_code == 200, response.text[:500]
    return BeautifulSoup(response.text, "html.parser")


def _entries(page: BeautifulSoup) -> list[str]:
    return [card["data-path"] for card in page.select(".hpclab-kb-entry")]


@pytest.mark.hub
@pytest.mark.timeout(300)
def test_the_page_filters_and_opens_an_example_in_a_matching_profile(tmp_path):
    config = hub_yaml(tmp_path / "state")
    config["knowledge_base"] = {"entries": [{"path": "resnet-horovod.ipynb", "profile": "gpu-1", "gpus": 1, "contact": EXPERT}]}
    with started_hub(tmp_path, config) as hub:
        alice, bob = login(hub, "alice"), login(hub, "bob")
        assert 'id="hpclab-examples-link"' in alice.http.get(f"{hub.url}/hub/home").text
        everything = _page(alice, hub)
        assert len(_entries(everything)) == 5 and "5 of 5 examples" in everything.select_one("#hpclab-kb-count").text
        assert "Horovod" in [o["value"] for o in everything.select("#kb-technology option")]
        assert _entries(_page(alice, hub, field="Neuroimaging")) == ["mri-datalad.ipynb", "mri-pipeline.ipynb"]
        assert _entries(_page(alice, hub, field="Neuroimaging", q="datalad")) == ["mri-datalad.ipynb"]
        assert _entries(_page(alice, hub, kernel="josephson")) == ["josephson-sweep.ipynb"]
        none = _page(alice, hub, technology="Quantum annealing")
        assert _entries(none) == [] and none.select_one("#hpclab-kb-none")

        horovod = _page(alice, hub, technology="Horovod")
        (card,) = horovod.select(".hpclab-kb-entry")
        assert card.select_one(".kb-contact").text == EXPERT and card.select_one(".kb-kernel").text == "dl"
        link = urlparse(card.select_one("a.hpclab-kb-open")["href"])
        assert link.path == "/hub/hpclab/open"
        assert parse_qs(link.query) == {"profile": ["gpu-1"], "path": ["examples/resnet-horovod.ipynb"]}
        # bob is not in gpu-users: no link to a profile he may not use, and the page says why
        (bobs,) = _page(bob, hub, technology="Horovod").select(".hpclab-kb-entry")
        assert bobs.select_one("a.hpclab-kb-open") is None
        assert "No profile you may use offers the dl kernel and 1 GPU" in bobs.select_one(".hpclab-kb-why").text
        assert bob.http.get(f"{hub.url}/hub/hpclab/open?{link.query}", allow_redirects=False).status_code == 403

        # alice opens it: the form of the GPU profile, Start, and the notebook is there in her server
        opened = alice.http.get(f"{hub.url}{link.path}?{link.query}", allow_redirects=False)
        assert opened.status_code == 302, opened.text[:300]
        target = urlparse(opened.headers["Location"])
        assert parse_qs(target.query)["next"] == [hub.user_url("alice") + "lab/tree/examples/resnet-horovod.ipynb"]
        try:
            assert alice.follow_spawn_link(f"{target.path}?{target.query}").status_code == 302
            server = alice.wait_ready("alice")
            assert server["user_options"]["profile"] == "gpu-1"
            target_url = parse_qs(target.query)["next"][0]
            assert alice.http.get(target_url).status_code == 200  # the notebook's page (and a login to the server)
            contents = alice.http.get(target_url.replace("/lab/tree/", "/api/contents/") + "?content=0")
            assert contents.status_code == 200 and contents.json()["type"] == "notebook", contents.text[:300]
        finally:
            stop_server(alice, "alice")
