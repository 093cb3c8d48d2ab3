"""Tests for hpclab.josephson: the φ0 junction model, its solvers, sweeps, CLI and SLURM path."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from hpclab.cli import main
from hpclab.josephson import JunctionParams, SweepResult, VoltageParams, load_sweep, simulate, sweep
from hpclab.josephson.model import current_rhs, llg, pulse_current
from hpclab.josephson.reference import final_state

# A 16 x 16 map over the seed's range: both verdicts occur, with several band edges.
G_AXIS = np.linspace(10, 100, 16)
ALPHA_AXIS = np.linspace(0.02, 0.2, 16)
# a small grid for backend equivalence
SMALL = dict(G=np.linspace(10, 100, 6), alpha=np.linspace(0.02, 0.2, 5), r=0.1)


# -- parameters --------------------------------------------------------------------------------------

def test_params_defaults_are_the_seed_setup():
    p = JunctionParams()
    assert (p.r, p.w, p.A_s, p.t_s, p.delta_t, p.t_end) == (0.1, 1.0, 1.5, 25.0, 5.0, 60.0)
    assert (p.pulse_start, p.pulse_end) == (22.5, 27.5)


def test_negative_damping_is_rejected_with_its_name():
    with pytest.raises(ValueError, match=r"alpha must be >= 0.*negative Gilbert damping"):
        JunctionParams(alpha=-0.01)


@pytest.mark.parametrize("width", [0.0, -1.0])
def test_nonpositive_pulse_width_is_rejected(width):
    with pytest.raises(ValueError, match=r"delta_t \(pulse width Δt\) must be > 0"):
        JunctionParams(delta_t=width)


@pytest.mark.parametrize("field", ["G", "r", "alpha", "w", "A_s", "t_s", "delta_t", "t_end"])
def test_nan_is_rejected_for_every_field(field):
    with pytest.raises(ValueError, match=rf"JunctionParams\.{field} must be a finite number, got nan"):
        JunctionParams(**{field: float("nan")})


def test_non_numbers_are_rejected():
    with pytest.raises(TypeError, match=r"JunctionParams\.G must be a real number, got '10'"):
        JunctionParams(G="10")
    with pytest.raises(TypeError, match="alpha"):
        JunctionParams(alpha=True)


def test_pulse_outside_the_simulated_time_is_rejected():
    with pytest.raises(ValueError, match=r"pulse \[70.0, 80.0\].*outside \[0, t_end=60.0\]"):
        JunctionParams(t_s=75, delta_t=10)


def test_params_are_frozen():
    with pytest.raises(AttributeError):
        JunctionParams().G = 3


def test_voltage_params_need_a_unit_initial_moment():
    with pytest.raises(ValueError, match=r"m0 must be a unit vector"):
        VoltageParams(m0=(0.0, 0.5, 0.5))


def test_sweep_rejects_bad_axes_and_names_before_any_work():
    with pytest.raises(ValueError, match=r"axis alpha: .*alpha must be >= 0"):
        sweep(G=[10, 20], alpha=[-0.1, 0.1], progress=False)
    with pytest.raises(ValueError, match=r"axis G must hold finite numbers, got nan at index 1"):
        sweep(G=[10, float("nan")], alpha=[0.1], progress=False)
    with pytest.raises(TypeError, match=r"unknown junction parameter\(s\) gamma"):
        sweep(G=[10], gamma=0.5, progress=False)
    with pytest.raises(ValueError, match=r"the pulse lies outside \[0, t_end\]"):
        sweep(t_s=[25, 100], alpha=[0.1], progress=False)


# -- the model ---------------------------------------------------------------------------------------

def _seed_llg(m, phi, G, r, alpha):
    """The LLG right-hand side exactly as written on the seed's slide (valid on |m| = 1)."""
    mx, my, mz = m
    hx, hy, hz = 0.0, G * r * math.sin(phi - r * my), mz
    mh = mx * hx + my * hy + mz * hz
    pre = -1 / (1 + alpha**2)
    return (
        pre * (my * hz - mz * hy + alpha * (mx * mh - hx)),
        pre * (mz * hx - mx * hz + alpha * (my * mh - hy)),
        pre * (mx * hy - my * hx + alpha * (mz * mh - hz)),
    )


def test_llg_equals_the_seeds_equations_on_the_unit_sphere():
    rng = np.random.default_rng(1)
    for _ in range(50):
        m = rng.normal(size=3)
        m /= np.linalg.norm(m)
        phi, G, r, alpha = rng.uniform(-7, 7), rng.uniform(0, 100), rng.uniform(0, 1), rng.uniform(0, 1)
        assert np.allclose(llg(*m, phi, G, r, alpha)[:3], _seed_llg(m, phi, G, r, alpha), rtol=1e-13, atol=1e-13)


def test_llg_keeps_the_length_of_any_m():
    """m·dm/dt = 0 even off the unit sphere, so |m| is an invariant of the flow itself."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        m = rng.normal(size=3) * rng.uniform(0.5, 2)
        dm = np.array(llg(*m, rng.uniform(-7, 7), 50.0, 0.3, 0.2)[:3])
        assert abs(np.dot(m, dm)) < 1e-12 * max(1.0, np.linalg.norm(dm))


def test_phase_equation_is_the_rsj_current_balance():
    """I = sin(φ − r·m_y) + w·d(φ − r·m_y)/dt: the normal current is driven by the gauge-invariant voltage."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.normal(size=4)
        G, r, alpha, w, current = 30.0, 0.3, 0.1, rng.uniform(0.2, 3), rng.uniform(-2, 2)
        dmx, dmy, dmz, dphi = current_rhs(*y, G, r, alpha, w, current)
        assert math.isclose(math.sin(y[3] - r * y[1]) + w * (dphi - r * dmy), current, abs_tol=1e-12)


def test_initial_state_is_an_equilibrium_without_current():
    assert current_rhs(0.0, 0.0, 1.0, 0.0, 50.0, 0.1, 0.1, 1.0, 0.0) == (0.0, 0.0, 0.0, 0.0)


def test_pulse_is_rectangular_with_closed_edges():
    assert [pulse_current(t, 1.5, 25, 5) for t in (22.49, 22.5, 25, 27.5, 27.51)] == [0.0, 1.5, 1.5, 1.5, 0.0]


# -- trap 1: the pulse must never be skipped ---------------------------------------------------------

SHORT = JunctionParams(G=20, alpha=0.1, delta_t=0.2)


def test_naive_solve_ivp_steps_over_a_short_pulse():
    """Why the pulse edges are breakpoints: from the equilibrium start, RK45 jumps the 0.2-wide pulse."""
    def f(t, y):
        return current_rhs(*y, SHORT.G, SHORT.r, SHORT.alpha, SHORT.w, pulse_current(t, SHORT.A_s, SHORT.t_s, SHORT.delta_t))

    sol = solve_ivp(f, (0, SHORT.t_end), [0.0, 0.0, 1.0, 0.0], method="RK45")
    assert sol.y[:, -1].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_reference_sees_a_short_pulse():
    traj = simulate(SHORT)
    during = (traj.t > SHORT.t_s - 0.1) & (traj.t < SHORT.t_s + 0.1)
    assert traj.current[during].max() == SHORT.A_s
    # the 0.2-long kick of 1.5 I_c advances the phase by ~0.3 and tips the moment
    assert 0.2 < traj.phi[np.searchsorted(traj.t, SHORT.pulse_end)] < 0.35
    assert np.max(np.hypot(traj.m[0], traj.m[1])) > 1e-3


def test_fast_solver_sees_a_short_pulse_like_the_reference():
    ref, _, _ = final_state(SHORT)
    fast = sweep(G=[SHORT.G], alpha=[SHORT.alpha], delta_t=SHORT.delta_t, progress=False)
    assert abs(ref[3]) > 1e-3 and abs(ref[0]) > 1e-3  # something happened
    assert np.allclose(fast.state[0, 0], ref, atol=1e-5)


def test_pulse_starting_before_t0_is_integrated_from_t0():
    p = JunctionParams(G=30, t_s=1.0, delta_t=4.0, t_end=3.0)  # pulse on [-1, 3]: on all the time
    ref, _, _ = final_state(p)
    fast = sweep(G=[30.0], t_s=1.0, delta_t=4.0, t_end=3.0, progress=False)
    assert ref[3] > 1.0  # three time units at 1.5 I_c wind the phase up
    assert np.allclose(fast.state[0], ref, atol=1e-5)


# -- trap 2: |m| must stay 1 -------------------------------------------------------------------------

STRONG = JunctionParams(G=500, r=0.1, alpha=0.1)  # G·r = 50


def test_default_rk45_tolerances_let_the_moment_length_drift():
    """Why tolerances matter: the seed's RK45 defaults leave |m| off by more than 1e-3 at G·r = 50."""
    y, _, _ = final_state(STRONG, method="RK45", rtol=1e-3, atol=1e-6)
    assert abs(np.linalg.norm(y[:3]) - 1) > 1e-3


def test_reference_keeps_the_moment_length():
    assert simulate(STRONG).norm_error < 1e-6


def test_fast_solver_keeps_the_moment_length():
    res = sweep(G=[10.0, 100.0, 500.0], alpha=[0.02, 0.1], r=0.1, progress=False)
    assert res.stats["norm_defect"].max() < 1e-6  # drift per step, before projection
    assert np.max(np.abs(np.linalg.norm(res.state[..., :3], axis=-1) - 1)) < 1e-12


def test_voltage_biased_variant_keeps_length_and_damps_towards_the_easy_axis():
    tilted = (0.6, 0.0, 0.8)
    traj = simulate(VoltageParams(G=0.0, alpha=0.1, V=1.0, t_end=40, m0=tilted))
    assert traj.norm_error < 1e-8
    # without coupling the anisotropy energy −m_z²/2 can only decrease: m_z grows towards 1
    assert np.all(np.diff(traj.m_z) >= -1e-12) and traj.m_z[-1] > 0.99
    coupled = simulate(VoltageParams(G=10.0, r=0.1, alpha=0.05, V=0.5, t_end=40))
    assert coupled.norm_error < 1e-8
    assert np.allclose(coupled.phi, 0.5 * coupled.t)
    assert np.max(np.abs(coupled.m[1])) > 1e-2  # the Josephson field H_y moves the moment


# -- fast path against the reference -----------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_map() -> SweepResult:
    return sweep(G=G_AXIS, alpha=ALPHA_AXIS, solver="reference", progress=False)


def test_fast_map_agrees_with_the_reference_in_99_percent_of_cells(reference_map):
    fast = sweep(G=G_AXIS, alpha=ALPHA_AXIS, progress=False)
    assert 0.1 < reference_map.reversed.mean() < 0.9, "the test grid must contain both verdicts"
    assert fast.agreement(reference_map) >= 0.99
    # any disagreement sits on a band edge: a neighbouring cell of the reference has the other verdict
    ref = reference_map.reversed
    for i, j in zip(*np.nonzero(fast.reversed != ref)):
        window = ref[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
        assert window.any() and not window.all(), f"disagreement inside a band at G={G_AXIS[i]}, α={ALPHA_AXIS[j]}"
    assert np.max(np.abs(fast.mz_final - reference_map.mz_final)) < 1e-3


def test_trajectory_ends_where_the_map_says(reference_map):
    i, j = np.argwhere(reference_map.reversed)[0]
    traj = simulate(JunctionParams(G=G_AXIS[i], alpha=ALPHA_AXIS[j]))
    assert traj.reversed
    assert math.isclose(traj.m_z[-1], reference_map.mz_final[i, j], abs_tol=1e-8)


# -- sweeps: backends give identical results ---------------------------------------------------------

@pytest.fixture(scope="module")
def serial_small() -> SweepResult:
    return sweep(**SMALL, progress=False)


def _assert_identical(a: SweepResult, b: SweepResult) -> None:
    assert np.array_equal(a.state, b.state)  # bit for bit
    for key in a.stats:
        assert np.array_equal(a.stats[key], b.stats[key], equal_nan=True), key


def test_serial_sweep_is_labelled_and_shaped_like_the_grid(serial_small):
    assert list(serial_small.axes) == ["G", "alpha"]
    assert serial_small.shape == (6, 5) and serial_small.mz_final.shape == (6, 5)
    assert serial_small.fixed["r"] == 0.1 and "G" not in serial_small.fixed
    assert serial_small.reversed.dtype == bool
    assert np.all(serial_small.stats["steps"] > 10) and np.all(serial_small.stats["rhs_calls"] > 100)
    # point (i, j) is the point G[i], alpha[j]
    single = sweep(G=[SMALL["G"][4]], alpha=[SMALL["alpha"][2]], progress=False)
    assert np.array_equal(single.state[0, 0], serial_small.state[4, 2])


def test_joblib_processes_give_bit_identical_results(serial_small):
    _assert_identical(serial_small, sweep(**SMALL, n_jobs=2, backend="loky", chunk_size=7, progress=False))


def test_joblib_threads_give_bit_identical_results(serial_small):
    res = sweep(**SMALL, n_jobs=2, chunk_size=4, progress=False)
    assert res.backend == "threading"
    _assert_identical(serial_small, res)


def test_dask_local_cluster_gives_bit_identical_results(serial_small):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = sweep(**SMALL, backend="dask", cluster=cluster, n_jobs=-1, chunk_size=5, progress=False)
    assert res.backend == "dask" and res.n_jobs == 2
    _assert_identical(serial_small, res)


def test_solve_ivp_solvers_run_in_sweeps_too(serial_small):
    seed = sweep(G=SMALL["G"][:2], alpha=SMALL["alpha"][:2], solver="seed", progress=False)
    assert seed.solver == "seed" and seed.rtol == 1e-3
    assert np.all(np.isnan(seed.stats["rejected"])) and np.all(seed.stats["rhs_calls"] > 0)


def test_dask_needs_a_cluster():
    with pytest.raises(ValueError, match="backend='dask' needs a cluster"):
        sweep(G=[10.0], backend="dask", progress=False)


# -- results: save, load, plot -----------------------------------------------------------------------

def test_result_round_trips_through_npz(serial_small, tmp_path):
    path = serial_small.save(tmp_path / "map.npz")
    with np.load(path) as raw:  # readable without hpclab
        assert np.array_equal(raw["G"], SMALL["G"]) and np.array_equal(raw["alpha"], SMALL["alpha"])
        assert raw["mz_final"].shape == (6, 5) and raw["reversed"].dtype == bool
    back = load_sweep(path)
    _assert_identical(serial_small, back)
    assert back.fixed == serial_small.fixed and back.solver == "fast" and back.rtol == serial_small.rtol
    assert back.summary() == serial_small.summary()


def test_result_plots_the_g_alpha_map(serial_small):
    import matplotlib

    matplotlib.use("Agg")
    ax = serial_small.plot()
    assert ax.get_xlabel() == "G" and ax.get_ylabel() == "α"
    mesh = ax.collections[0]
    assert np.array_equal(np.asarray(mesh.get_array()).reshape(5, 6), serial_small.reversed.T.astype(float))
    ax2 = serial_small.plot(quantity="mz_final")
    assert np.allclose(np.asarray(ax2.collections[0].get_array()).reshape(5, 6), serial_small.mz_final.T)
    with pytest.raises(ValueError, match="quantity"):
        serial_small.plot(quantity="energy")


def test_trajectory_plot_shows_mz_and_the_pulse():
    import matplotlib

    matplotlib.use("Agg")
    traj = simulate(JunctionParams(G=20), n_points=301)
    ax = traj.plot()
    lines = ax.get_lines()
    assert len(lines) == 2 and np.array_equal(lines[1].get_ydata(), traj.m_z)
    assert lines[0].get_ydata().max() == 1.5


# -- command line ------------------------------------------------------------------------------------

def test_cli_sweep_writes_an_npz_other_tools_can_read(tmp_path):
    out, png = tmp_path / "map.npz", tmp_path / "map.png"
    script = Path(sys.executable).with_name("hpclab")
    cmd = [str(script), "josephson", "sweep", "--G", "10:100:4", "--alpha", "0.02:0.2:3", "--r", "0.1",
           "--A-s", "1.5", "--t-s", "25", "--pulse-width", "5", "--w", "1", "--t-end", "60", "--jobs", "2",
           "--out", str(out), "--plot", str(png), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    line = proc.stdout.strip()
    assert "\n" not in line and line.startswith("12 points (G 4 x alpha 3), ") and " reversed, " in line
    with np.load(out) as data:
        assert np.array_equal(data["G"], np.linspace(10, 100, 4))
        assert np.array_equal(data["alpha"], np.linspace(0.02, 0.2, 3))
        direct = sweep(G=np.linspace(10, 100, 4), alpha=np.linspace(0.02, 0.2, 3), progress=False)
        assert np.array_equal(data["mz_final"], direct.mz_final)
        assert np.array_equal(data["reversed"], direct.reversed)
        assert f"{int(direct.reversed.sum())} reversed" in line
    assert png.stat().st_size > 1000


def test_cli_axis_order_follows_the_flags(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["josephson", "sweep", "--alpha", "0.05,0.1", "--G", "20:40:3", "--quiet", "--out", str(out)]) == 0
    res = load_sweep(out)
    assert list(res.axes) == ["alpha", "G"] and res.shape == (2, 3)
    assert "6 points (alpha 2 x G 3)" in capsys.readouterr().out


def test_cli_reports_bad_parameters_clearly(tmp_path, capsys):
    assert main(["josephson", "sweep", "--alpha", "-0.1", "--out", str(tmp_path / "x.npz")]) == 2
    assert "alpha must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["josephson", "sweep", "--G", "10:100", "--out", str(tmp_path / "x.npz")])
    assert exc.value.code == 2
    assert "not a number, a list v1,v2,... or an axis start:stop:count" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


# -- across nodes: dask workers as SLURM jobs on the real dev cluster --------------------------------

def test_slurm_workers_give_bit_identical_results(serial_small, slurm_cluster, tmp_path, monkeypatch):
    """dask-jobqueue SLURMCluster: each worker is a SLURM job on deploy/slurm/dev-cluster."""
    from hpclab.josephson import slurm_cluster as make_slurm_cluster
    from hpclab.josephson.cluster import resolve_client, wait_for_workers

    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    cluster = make_slurm_cluster(jobs=2, cores=1, memory="1GiB", walltime="00:10:00", queue="cpu",
                                 log_directory=str(tmp_path), local_directory=str(tmp_path),
                                 scheduler_options={"host": "127.0.0.1"})
    try:
        client, _ = resolve_client(cluster)
        wait_for_workers(client, 2, timeout=120)
        job_ids = set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
        assert len(job_ids) == 2 and None not in job_ids  # two workers, two SLURM jobs
        squeue = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=dict(os.environ, SLURM_CONF=slurm_cluster),
                                capture_output=True, text=True, check=True).stdout.split("\n")
        running = {line.split()[0] for line in squeue if line.endswith("RUNNING")}
        assert job_ids <= running
        res = sweep(**SMALL, backend="dask", cluster=client, n_jobs=-1, chunk_size=5, progress=False)
        client.close()
    finally:
        cluster.close()
    _assert_identical(serial_small, res)


def test_cli_sends_a_sweep_to_slurm_workers(serial_small, slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster)
    monkeypatch.chdir(tmp_path)  # dask-jobqueue's worker logs land here
    out = tmp_path / "map.npz"
    argv = ["josephson", "sweep", "--G", "10:100:6", "--alpha", "0.02:0.2:5", "--r", "0.1", "--chunk-size", "5",
            "--slurm-jobs", "2", "--mem", "1GiB", "--time", "00:10:00", "--partition", "cpu",
            "--slurm-timeout", "120", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert "[fast rtol=1e-07, dask n_jobs=2]" in capsys.readouterr().out
    _assert_identical(serial_small, load_sweep(out))


def test_cli_slurm_flags_share_one_set_of_names_and_old_names_still_work_with_a_note(capsys):
    """--partition --time --mem --cpus --account everywhere; josephson's old --slurm-* names are deprecated aliases."""
    import argparse

    from hpclab.josephson.cli import add_parser as josephson_parser
    from hpclab.mri.cli import add_parser as mri_parser
    from hpclab.training.cli import add_parser as train_parser

    parser = argparse.ArgumentParser(prog="hpclab")
    sub = parser.add_subparsers()
    for add in (josephson_parser, mri_parser, train_parser):
        add(sub)
    new = parser.parse_args(["josephson", "sweep", "--out", "m.npz", "--partition", "cpu", "--time", "00:10:00",
                             "--mem", "1G", "--cpus", "2", "--account", "proj"])
    old = parser.parse_args(["josephson", "sweep", "--out", "m.npz", "--slurm-queue", "cpu", "--slurm-walltime", "00:10:00",
                             "--slurm-memory", "1G", "--slurm-cores", "2", "--slurm-account", "proj"])
    picked = lambda ns: (ns.partition, ns.time, ns.mem, ns.cpus, ns.account)  # noqa: E731
    assert picked(new) == picked(old) == ("cpu", "00:10:00", "1G", 2, "proj")
    err = capsys.readouterr().err
    assert "--slurm-queue is deprecated and will be removed in the next release; use --partition" in err
    assert "--slurm-walltime is deprecated" in err and "use --time" in err
    cohort = parser.parse_args(["mri", "cohort", "in", "out", "--slurm", "--partition", "cpu", "--time", "01:00:00",
                                "--mem", "2G", "--cpus", "2", "--account", "proj"])
    assert (cohort.partition, cohort.time, cohort.mem, cohort.cpus, cohort.account) == ("cpu", "01:00:00", "2G", 2, "proj")
    train = parser.parse_args(["train", "resnet", "--slurm", "--gpus-per-node", "4", "--partition", "gpu", "--time", "02:00:00",
                               "--mem", "64G", "--account", "proj"])
    assert (train.gpus, train.partition, train.time, train.mem, train.account) == (4, "gpu", "02:00:00", "64G", "proj")
    assert "--gpus-per-node is deprecated" in capsys.readouterr().err
