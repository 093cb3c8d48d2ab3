r"""Right-hand sides of the φ0 Josephson junction model, as plain scalar functions.

Reference: Yu. M. Shukrinov, I. R. Rahmonov, K. Sengupta, A. Buzdin, "Magnetization reversal by
superconducting current in φ0 Josephson junctions", Appl. Phys. Lett. 110, 182407 (2017).

State y = (m_x, m_y, m_z, φ); time in units of 1/ω_F, current in units of I_c. Exactly as coded below:

    φ0 = r·m_y,   H = (0, G·r·sin(φ − r·m_y), m_z)
    dm/dt = −1/(1 + α²) · [ m × H + α·( m·(m·H) − |m|²·H ) ]
    dφ/dt = ( I(t) − sin(φ − r·m_y) ) / w + r·dm_y/dt
    I(t)  = A_s if |t − t_s| ≤ Δt/2 else 0

m·(m·H) − |m|²·H equals m × (m × H), so m·dm/dt = 0 for any |m| and |m| is an exact invariant of the
flow (the seed's "m(m·H) − H" agrees with it only on |m| = 1 and lets numerical drift grow).
The phase equation is the RSJ current balance I = sin(φ − φ0) + w·d(φ − φ0)/dt: the normal current is
driven by the gauge-invariant voltage d(φ − φ0)/dt, not by dφ/dt alone.

The voltage-biased variant imposes φ(t) = V·t and integrates m only.

Everything here is plain Python on floats (``register_jitable``: called from Python it is Python),
so the same source runs under solve_ivp (reference) and, compiled by numba, in the fast batch solver.
"""

from __future__ import annotations

import math

from numba.extending import register_jitable


@register_jitable
def llg(m_x: float, m_y: float, m_z: float, phi: float, G: float, r: float, alpha: float) -> tuple[float, float, float, float]:
    """dm/dt of the normalised LLG equation and sin(φ − r·m_y); see the module docstring."""
    s = math.sin(phi - r * m_y)
    h_y = G * r * s
    h_z = m_z
    m_dot_h = m_y * h_y + m_z * h_z
    m_sq = m_x * m_x + m_y * m_y + m_z * m_z
    pre = -1.0 / (1.0 + alpha * alpha)
    dm_x = pre * ((m_y * h_z - m_z * h_y) + alpha * (m_x * m_dot_h))
    dm_y = pre * ((-m_x * h_z) + alpha * (m_y * m_dot_h - m_sq * h_y))
    dm_z = pre * ((m_x * h_y) + alpha * (m_z * m_dot_h - m_sq * h_z))
    return dm_x, dm_y, dm_z, s


@register_jitable
def current_rhs(
    m_x: float, m_y: float, m_z: float, phi: float, G: float, r: float, alpha: float, w: float, current: float
) -> tuple[float, float, float, float]:
    """d(m_x, m_y, m_z, φ)/dt of the current-biased junction at bias ``current`` = I(t)."""
    dm_x, dm_y, dm_z, s = llg(m_x, m_y, m_z, phi, G, r, alpha)
    dphi = (current - s) / w + r * dm_y
    return dm_x, dm_y, dm_z, dphi


@register_jitable
def pulse_current(t: float, A_s: float, t_s: float, delta_t: float) -> float:
    """The rectangular pulse I(t) = A_s for |t − t_s| ≤ Δt/2, else 0."""
    return A_s if abs(t - t_s) <= 0.5 * delta_t else 0.0
