"""The hub's id in its jobs' comments is kept in its JupyterHub database, not derived from the database URL."""

from __future__ import annotations

import re
from pathlib import Path

from jupyterhub import orm

from hpclab_hub.backends.slurm.hub_id import ensure_hub_id, legacy_hub_id, stored_hub_id


def hub_db(path: Path, url_suffix: str = ""):
    """A session on a real JupyterHub database (its own tables made by JupyterHub's ORM)."""
    return orm.new_session_factory(f"sqlite:///{path}{url_suffix}")()


def test_a_new_hub_draws_an_id_once_and_keeps_it_when_the_database_url_changes(tmp_path):
    db = hub_db(tmp_path / "jupyterhub.sqlite")
    url = f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}"
    hub_id, origin = ensure_hub_id(db, url, ["hpclab:someone-else:cpu", ""], servers_with_jobs=False)
    assert origin == "new" and re.fullmatch(r"[0-9a-f]{8}", hub_id) and hub_id != legacy_hub_id(url)
    db.close()
    # the same database reached by another URL (a rotated password, another host name, options): the same id
    other = hub_db(tmp_path / "jupyterhub.sqlite", "?timeout=30")
    assert ensure_hub_id(other, url + "?timeout=30", [], servers_with_jobs=False) == (hub_id, "database")
    assert stored_hub_id(other) == hub_id


def test_a_hub_from_before_adopts_its_old_id_once_where_its_jobs_carry_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    old = legacy_hub_id(url)
    db = hub_db(tmp_path / "a.sqlite")
    assert ensure_hub_id(db, url, [f"hpclab:{old}:gpu-1"], servers_with_jobs=False) == (old, "adopted")
    # later, under a new URL (whose hash differs), the adopted id stays: orphans from before are still found
    assert ensure_hub_id(db, url + "?x=1", [], servers_with_jobs=False) == (old, "database")

    url_b = f"sqlite:///{tmp_path / 'b.sqlite'}"
    db_b = hub_db(tmp_path / "b.sqlite")  # no job in the queue, but servers in the database have jobs
    assert ensure_hub_id(db_b, url_b, [], servers_with_jobs=True) == (legacy_hub_id(url_b), "adopted")


def test_the_yaml_id_wins_and_is_not_stored(tmp_path):
    db = hub_db(tmp_path / "c.sqlite")
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    assert ensure_hub_id(db, url, [], servers_with_jobs=False, configured="physics-hub") == ("physics-hub", "yaml")
    assert stored_hub_id(db) is None
