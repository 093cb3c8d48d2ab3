"""The local backend: servers as processes under their users' accounts, with cgroups, private mounts and a port fence."""
