"""``hpclab-kernel NAME -f CONNECTION_FILE``: start a curated kernel inside its allocation.

Every HPCLab kernelspec (``hpclab_hub/kernels/templates/<name>/kernel.json``, installed by ``hpclab-hub kernels install``)
runs this one launcher. It

1. sets the thread counts of OpenMP, MKL, OpenBLAS, BLIS, numexpr, Accelerate, numba and loky (and
   so PyTorch, which follows OMP/MKL) to the cores of the allocation: SLURM_CPUS_PER_TASK, else the
   CPU affinity -- never the node's full core count;
2. keeps CUDA_VISIBLE_DEVICES as the spawner set it;
3. exports the kernel's site settings (``environment``: FREESURFER_HOME, data paths; ``$VARS``
   expanded) and runs its ``modules`` lines in bash, keeping the environment they leave;
4. replaces itself (exec) with ipykernel in the kernel's runtime: ``PREFIX/bin/python -m
   ipykernel_launcher -f CONN`` for a venv or conda prefix, or ``apptainer exec --nv IMAGE python -m
   ipykernel_launcher -f CONN`` for an Apptainer image.

When the runtime cannot start (prefix or image missing, ipykernel absent, a module line failing),
it starts :mod:`hpclab.kernel_launcher.error_kernel` instead with the server's own Python: a kernel
that answers every cell with the reason, so the user reads it in JupyterLab instead of watching
the kernel restart until Jupyter gives up.

The settings come from the ``metadata.hpclab`` entry of the kernelspec's kernel.json, which
``hpclab-hub kernels install`` writes from the deploy YAML (see docs/kernels.md).
"""

from .launcher import (
    THREAD_VARIABLES,
    KernelSettings,
    LaunchError,
    allocation_threads,
    kernel_environment,
    main,
    runtime_command,
)

__all__ = [
    "THREAD_VARIABLES",
    "KernelSettings",
    "LaunchError",
    "allocation_threads",
    "kernel_environment",
    "main",
    "runtime_command",
]
