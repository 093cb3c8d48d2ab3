"""The hub's spawner: the form, authorisation and quotas, wall time, the home page; the backend object runs the server."""
