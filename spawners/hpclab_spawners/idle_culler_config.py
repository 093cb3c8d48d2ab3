# jupyterhub-idle-culler configuration (loaded with --config): a timeout per profile.
from hpclab_spawners.culling import ProfileIdleArbiter

c.IdleCuller.cull_arbiter_hook = ProfileIdleArbiter.from_environment()  # noqa: F821 (c is the culler's config)
