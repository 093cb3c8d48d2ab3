"""Issue 31, item 3: a knowledge base in the hub. Every shipped example carries its metadata; the page lists them,
filters by technology, field, tool, kernel and words, and "Open" starts the example in a profile the user may use
that fits it (the YAML's choice where allowed), never in one their groups do not allow."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from bs4 import BeautifulSoup

from hpclab_hub.config.errors import ConfigError
from hpclab_hub.config.loader import load_deployment, parse_deployment
from hpclab_hub.spawner.environment import server_args
from hpclab_hub.web.knowledge_base import catalogue, profile_for
from support.hubtools import home_of, hub_yaml, login, started_hub, stop_server
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


# --- git repositories pulled into the server with nbgitpuller ----------------------------------------------------

GIT_NOTEBOOK = {
    "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# Pulled from git\n"]}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def _git_entry(repo: str, **more) -> dict:
    return {"git": repo, "title": "ML tutorial", "summary": "From a repository", "technologies": ["PyTorch"], **more}


def test_a_git_entry_is_listed_and_only_then_do_servers_get_nbgitpuller(tmp_path):
    deployment = parse_deployment(
        _yaml(tmp_path, [_git_entry("https://example.org/ml/tutorial.git", open="intro.ipynb")]), tmp_path
    )
    examples = {e.path: e for e in catalogue(deployment)}
    tutorial = examples["tutorial/"]
    assert (tutorial.git, tutorial.open, tutorial.title) == ("https://example.org/ml/tutorial.git", "intro.ipynb", "ML tutorial")
    assert tutorial.matches({"technology": "pytorch"}) and len(examples) == 6  # the 5 notebooks and the repository
    log = logging.getLogger("test")
    small = deployment.profile("small")
    assert "--ServerApp.jpserver_extensions=nbgitpuller=True" in server_args(deployment, small, log)
    assert "--ServerApp.jpserver_extensions=nbgitpuller=False" not in server_args(deployment, small, log)
    plain = parse_deployment(_yaml(tmp_path, []), tmp_path)
    assert "--ServerApp.jpserver_extensions=nbgitpuller=False" in server_args(plain, plain.profile("small"), log)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"git": "https://example.org/a.git", "path": "resnet-horovod.ipynb", "title": "x"}, "either path"),
        ({"git": "https://example.org/a.git"}, "a git entry needs a title"),
        (_git_entry("https://example.org/a.git", open="../etc/passwd"), "a file inside the repository"),
        (_git_entry("https://example.org/a.git", folder="a/b"), "one folder name"),
        ({"path": "resnet-horovod.ipynb", "branch": "main"}, "go with git entries only"),
    ],
)
def test_bad_git_entries_are_refused(tmp_path, entry, message):
    with pytest.raises(ConfigError) as refused:
        parse_deployment(_yaml(tmp_path, [entry]), tmp_path)
    assert "knowledge_base.entries[0]" in str(refused.value) and message in str(refused.value), str(refused.value)


def test_a_git_entry_in_tmp_is_refused_since_no_server_sees_it(tmp_path):
    (tmp_path / "site.yaml").write_text(_yaml(tmp_path, [_git_entry("file:///tmp/kb/tutorial")]))
    with pytest.raises(ConfigError) as refused:
        load_deployment(tmp_path / "site.yaml")
    assert "knowledge_base.entries[0].git: /tmp/kb/tutorial: servers cannot see it" in str(refused.value), str(refused.value)
    (tmp_path / "site.yaml").write_text(_yaml(tmp_path, [_git_entry("/var/tmp/kb/tutorial")]))
    with pytest.raises(ConfigError) as refused:
        load_deployment(tmp_path / "site.yaml")
    assert "knowledge_base.entries[0].git: /var/tmp/kb/tutorial: servers cannot see it" in str(refused.value), str(refused.value)
    (tmp_path / "site.yaml").write_text(_yaml(tmp_path, [_git_entry("/srv/kb/tutorial"), _git_entry("https://x.org/a.git")]))
    assert load_deployment(tmp_path / "site.yaml").knowledge_base.pulls_git


def _repository(folder: Path) -> Path:
    """A git repository in a local folder, as a site would keep one: a notebook and a data file, one commit."""
    folder.mkdir(parents=True)
    (folder / "intro.ipynb").write_text(json.dumps(GIT_NOTEBOOK))
    (folder / "data.csv").write_text("x,y\n1,2\n")
    for command in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "tutorial"]):
        git = ["git", "-c", "user.name=Tutor", "-c", "user.email=tutor@example.org", *command]
        subprocess.run(git, cwd=folder, check=True, capture_output=True)
    return folder


def _pull_events(client, url: str) -> list[dict]:
    """What nbgitpuller's page does in the browser: read /git-pull/api's event stream until it ends."""
    api = url.replace("/git-pull?", "/git-pull/api?", 1)
    with client.http.get(api, stream=True, timeout=120) as response:
        assert response.status_code == 200, response.text[:300]
        events = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    return events


@pytest.mark.hub
@pytest.mark.timeout(300)
def test_a_git_entry_opens_and_arrives_in_the_server(tmp_path):
    # in /srv, as a site's repositories would be: each server has a /tmp and /var/tmp of its own (server_namespace.py)
    site = Path(tempfile.mkdtemp(prefix="hpclab-kb-test-", dir="/srv"))
    try:
        _open_and_pull(tmp_path, _repository(site / "ml-tutorial"))
    finally:
        shutil.rmtree(site)


def _open_and_pull(tmp_path: Path, repo: Path) -> None:
    config = hub_yaml(tmp_path / "state")
    config["knowledge_base"] = {"entries": [_git_entry(f"file://{repo}", folder="tutorial", open="intro.ipynb")]}
    with started_hub(tmp_path, config) as hub:
        alice = login(hub, "alice")
        (card,) = [c for c in _page(alice, hub, technology="PyTorch").select(".hpclab-kb-entry") if c["data-path"] == "tutorial/"]
        link = urlparse(card.select_one("a.hpclab-kb-open")["href"])
        assert parse_qs(link.query) == {"profile": ["cpu-small"], "git": ["tutorial"]}
        # a folder the YAML does not name is no repository to pull
        assert alice.http.get(f"{hub.url}/hub/hpclab/open?profile=cpu-small&git=other", allow_redirects=False).status_code == 404
        opened = alice.http.get(f"{hub.url}{link.path}?{link.query}", allow_redirects=False)
        assert opened.status_code == 302, opened.text[:300]
        target = parse_qs(urlparse(opened.headers["Location"]).query)["next"][0]
        pull = urlparse(target)
        assert target.startswith(hub.user_url("alice") + "git-pull?"), target
        assert parse_qs(pull.query) == {
            "repo": [f"file://{repo}"],
            "targetpath": ["tutorial"],
            "urlpath": ["lab/tree/tutorial/intro.ipynb"],
        }
        try:
            started = alice.follow_spawn_link(
                urlparse(opened.headers["Location"]).path + "?" + urlparse(opened.headers["Location"]).query
            )
            assert started.status_code == 302, hub.log_tail()
            alice.wait_ready("alice")
            # git refuses a repository another account owns: the site's repository is readable by, and here owned by, her
            home = home_of(hub.config["hub"]["data_dir"], "alice")
            owner = home.stat()
            repo.parent.chmod(0o755)
            subprocess.run(["chown", "-R", f"{owner.st_uid}:{owner.st_gid}", str(repo)], check=True)
            page = alice.http.get(target)  # nbgitpuller's page in her server
            assert page.status_code == 200 and "tutorial" in page.text, page.text[:300]
            events = _pull_events(alice, target)
            assert events[-1]["phase"] == "finished", events
            assert json.loads((home / "tutorial" / "intro.ipynb").read_text())["cells"][0]["source"] == ["# Pulled from git\n"]
            assert (home / "tutorial" / "data.csv").stat().st_uid == owner.st_uid  # pulled as her, into her home
            contents = alice.http.get(hub.user_url("alice") + "api/contents/tutorial/intro.ipynb?content=0")
            assert contents.status_code == 200 and contents.json()["type"] == "notebook", contents.text[:300]
            # a new commit, and Open again: her running server is reused, straight to /git-pull, and the commit arrives
            (repo / "part2.ipynb").write_text(json.dumps(GIT_NOTEBOOK))
            subprocess.run(["runuser", "-u", home.owner(), "--", "git", "add", "."], cwd=repo, check=True)
            commit = ["git", "-c", "user.name=Tutor", "-c", "user.email=t@example.org", "commit", "-q", "-m", "part 2"]
            subprocess.run(["runuser", "-u", home.owner(), "--", *commit], cwd=repo, check=True)
            again = alice.http.get(f"{hub.url}{link.path}?{link.query}", allow_redirects=False)
            assert again.status_code == 302 and again.headers["Location"] == target, again.headers.get("Location")
            assert _pull_events(alice, target)[-1]["phase"] == "finished"
            assert (home / "tutorial" / "part2.ipynb").is_file()
        finally:
            stop_server(alice, "alice")
