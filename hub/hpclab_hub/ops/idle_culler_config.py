# jupyterhub-idle-culler configuration (loaded with --config): a timeout per profile.
import signal

from hpclab_hub.ops.culling import ProfileIdleArbiter

# c: the configuration the culler's traitlets loader injects into this file's namespace
c.IdleCuller.cull_arbiter_hook = ProfileIdleArbiter.from_environment()  # type: ignore[name-defined]  # noqa: F821

# The hub stops its services with SIGINT and waits 30 s (interrupt_timeout) before SIGTERM. A hub
# started from a shell that ignores SIGINT (a background job, nohup) passes that on to the culler,
# which then sat out the 30 s on every stop: restore Python's handler so SIGINT ends it at once.
signal.signal(signal.SIGINT, signal.default_int_handler)
