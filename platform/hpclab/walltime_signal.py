"""The signal a server gets shortly before its wall time ends (SLURM's --signal, or the local spawner).

Kept apart from hpclab.walltime so the hub can name it without importing Jupyter Server.
SIGUSR1 is Jupyter Server's own ("print server info"), hence SIGUSR2.
"""

import signal

EARLY_SIGNAL = signal.SIGUSR2
