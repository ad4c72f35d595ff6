"""Two-layer quasi-geostrophic model (pyqg's ``QGModel``) in PyTorch, with coarse-graining
and subgrid-forcing operators for eddy-parameterization benchmarks.

Pseudo-spectral, doubly periodic square domain of side ``L``, real FFTs (``rfft2``), state
``qh`` (spectral PV) shaped ``[*batch, 2, nx, nx//2+1]`` so that an ensemble of independent
runs steps in one call. Layer 1 is the upper layer. Equations (pyqg's two-layer model)::

    q1 = lap(psi1) + F1 (psi2 - psi1),     q2 = lap(psi2) + F2 (psi1 - psi2)
    F1 = 1 / (rd^2 (1 + delta)),           F2 = delta F1,        delta = H1 / H2
    Qy1 = beta + F1 (U1 - U2),             Qy2 = beta - F2 (U1 - U2)
    dq_i/dt = -div((u_i + U_i) q_i, v_i q_i) - Qy_i dpsi_i/dx  - [i = 2] rek lap(psi2)
              + curl(du, dv) + dq                               (optional parameterizations)

with u = -dpsi/dy, v = dpsi/dx (perturbation velocities; the background flow U_i is uniform).
Time stepping is pyqg's: forward Euler, then AB2, then AB3, each step followed by the
exponential spectral filter ``exp(-filterfac (wvx - 0.65 pi)^4)`` for
``wvx = sqrt((k dx)^2 + (l dy)^2) > 0.65 pi`` (Arbic & Flierl 2003). No dealiasing (as pyqg).

``QGConfig``'s defaults are pyqg's "eddy" configuration (nx=64, dt=1 h; the synthetic ocean's
high-resolution run uses nx=256). :func:`ke_timeseries` records KE while a model runs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DAY",
    "YEAR",
    "QGConfig",
    "QGModel",
    "coarsen",
    "ke_timeseries",
    "subgrid_forcing",
]

DAY = 86400.0
YEAR = 365.0 * DAY

# Adams-Bashforth weights for ablevel 0 (Euler), 1 (AB2), 2 (AB3), as multiples of dt.
_AB = ((1.0, 0.0, 0.0), (1.5, -0.5, 0.0), (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0))


@dataclass(frozen=True)
class QGConfig:
    """Parameters of pyqg's two-layer ``QGModel`` (SI units); defaults: the "eddy" configuration."""

    nx: int = 64
    L: float = 1e6
    dt: float = 3600.0
    beta: float = 1.5e-11
    rek: float = 5.787e-7
    delta: float = 0.25
    rd: float = 15e3
    H1: float = 500.0
    U1: float = 0.025
    U2: float = 0.0
    filterfac: float = 23.6

    def __post_init__(self) -> None:
        if self.nx < 4 or self.nx % 2:
            raise ValueError(f"nx must be even and >= 4, got {self.nx}")

    @property
    def ny(self) -> int:
        return self.nx

    @property
    def nk(self) -> int:
        """Number of rfft wavenumbers in x: nx // 2 + 1."""
        return self.nx // 2 + 1

    @property
    def dx(self) -> float:
        return self.L / self.nx

    @property
    def H2(self) -> float:
        return self.H1 / self.delta

    @property
    def H(self) -> float:
        return self.H1 + self.H2

    @property
    def F1(self) -> float:
        """F1 = 1 / (rd^2 (1 + delta))."""
        return 1.0 / (self.rd**2 * (1.0 + self.delta))

    @property
    def F2(self) -> float:
        """F2 = delta F1."""
        return self.delta * self.F1

    @property
    def Qy1(self) -> float:
        """Upper-layer background PV gradient beta + F1 (U1 - U2)."""
        return self.beta + self.F1 * (self.U1 - self.U2)

    @property
    def Qy2(self) -> float:
        """Lower-layer background PV gradient beta - F2 (U1 - U2)."""
        return self.beta - self.F2 * (self.U1 - self.U2)

    def replace(self, **changes: float | int) -> QGConfig:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def _wavenumbers(n: int, L: float) -> tuple[Tensor, Tensor]:
    """rfft2 wavenumbers (float64, CPU): l [n, 1] (fft order) and k [1, n//2+1]."""
    dk = 2.0 * math.pi / L
    ll = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64) * dk
    kk = torch.arange(n // 2 + 1, dtype=torch.float64) * dk
    return ll[:, None], kk[None, :]


class QGModel:
    """Batched two-layer QG model; see the module docstring for the equations.

    ``uv_parameterization(model) -> (du, dv)`` returns momentum tendencies
    ``[*batch, 2, ny, nx]`` whose curl ``d(dv)/dx - d(du)/dy`` is added to dq/dt;
    ``q_parameterization(model) -> dq`` returns a PV tendency added as is. Both are
    evaluated once per step at the current state (``model.q``, ``model.u``, ... are valid).

    All buffers live on ``device`` in ``dtype`` (complex counterpart in spectral space); the
    stepping works in place on preallocated buffers under ``torch.inference_mode`` (not
    differentiable). Real-space fields returned by properties are copies.
    """

    def __init__(
        self,
        cfg: QGConfig,
        batch: tuple[int, ...] = (),
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
        uv_parameterization: Callable[[QGModel], tuple[Tensor, Tensor]] | None = None,
        q_parameterization: Callable[[QGModel], Tensor] | None = None,
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.cfg = cfg
        self.batch = tuple(int(b) for b in batch)
        self.device = torch.device(device if device is not None else "cpu")
        self.dtype = dtype
        self.cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.uv_parameterization = uv_parameterization
        self.q_parameterization = q_parameterization
        self.t = 0.0
        self.n_steps = 0
        self._ablevel = 0

        n, nk = cfg.nx, cfg.nk
        self.nx = self.ny = n
        l64, k64 = _wavenumbers(n, cfg.L)
        wv2 = k64**2 + l64**2  # [n, nk]
        # Inversion psi = A q per wavenumber, A = B^-1 with B = [[-K2-F1, F1], [F2, -K2-F2]]
        # (q = B psi), det B = K2 (K2 + F1 + F2); the zero mode maps to psi = 0.
        det = wv2 * (wv2 + cfg.F1 + cfg.F2)
        inv = torch.where(det > 0, 1.0 / torch.where(det > 0, det, 1.0), 0.0)
        a = torch.stack(
            [
                torch.stack([-(wv2 + cfg.F2) * inv, -cfg.F1 * inv]),
                torch.stack([-cfg.F2 * inv, -(wv2 + cfg.F1) * inv]),
            ]
        )  # [2 (psi layer), 2 (q layer), n, nk]
        # Exponential filter (pyqg, Arbic & Flierl 2003), dx = dy.
        cphi = 0.65 * math.pi
        wvx = torch.sqrt(wv2) * cfg.dx
        filtr = torch.where(wvx > cphi, torch.exp(-cfg.filterfac * (wvx - cphi) ** 4), 1.0)

        dev, rd, cd = self.device, dtype, self.cdtype
        self.k = k64.to(dev, rd)  # [1, nk]
        self.l = l64.to(dev, rd)  # [n, 1]
        self.wv2 = wv2.to(dev, rd)
        self.ik = (1j * k64).to(dev, cd)
        self.il = (1j * l64).to(dev, cd)
        self._mik, self._mil = -self.ik, -self.il
        self.filtr = filtr.to(dev, rd)
        self._a = a.to(dev, rd)
        self._U = torch.tensor([cfg.U1, cfg.U2], dtype=torch.float64).to(dev, rd)[:, None, None]
        # -i k Qy_i per layer [2, 1, nk] and the drag +rek K2 on the lower layer (-rek lap psi2).
        Qy = torch.tensor([cfg.Qy1, cfg.Qy2], dtype=torch.float64)
        self._mikQy = (-1j * Qy[:, None, None] * k64).to(dev, cd)
        self._drag = (cfg.rek * wv2).to(dev, rd)

        b = self.batch
        # Spectral work buffer: slots (qh, uh, vh) so one irfft2 gives q, u, v; qh is slot 0.
        self._spec = torch.zeros(*b, 3, 2, n, nk, dtype=cd, device=dev)
        self._qh = self._spec[..., 0, :, :, :]
        self._real = torch.zeros(*b, 3, 2, n, n, dtype=rd, device=dev)
        self._flux = torch.zeros(*b, 2, 2, n, n, dtype=rd, device=dev)
        self._fluxh = torch.zeros(*b, 2, 2, n, nk, dtype=cd, device=dev)
        self._ph = torch.zeros(*b, 2, n, nk, dtype=cd, device=dev)
        self._dqh = [torch.zeros(*b, 2, n, nk, dtype=cd, device=dev) for _ in range(3)]
        self._real_valid = False  # whether _real holds (q, u, v) of the current state

    # ----------------------------------------------------------------- state
    @property
    def shape(self) -> tuple[int, ...]:
        """Real-space state shape ``(*batch, 2, ny, nx)``."""
        return (*self.batch, 2, self.ny, self.nx)

    def set_q(self, q: Tensor) -> None:
        """Set the PV anomaly (real space, broadcastable to ``[*batch, 2, ny, nx]``); restarts
        the time stepping with forward Euler (AB3 history dropped). ``t`` is kept."""
        if torch.broadcast_shapes(tuple(q.shape), self.shape) != self.shape:
            raise ValueError(f"q must broadcast to {self.shape}, got {tuple(q.shape)}")
        self._qh.copy_(torch.fft.rfft2(q.to(self.device, self.dtype)))
        self._ablevel = 0
        self._real_valid = False

    def set_qh(self, qh: Tensor) -> None:
        """Set the spectral PV (rfft2 layout ``[*batch, 2, ny, nx//2+1]``); restarts AB3."""
        self._qh.copy_(qh.to(self.device, self.cdtype))
        self._ablevel = 0
        self._real_valid = False

    def random_init(self, seed: int, amplitude: float = 1e-7) -> None:
        """pyqg-like initial PV in both layers: ``amplitude`` x uniform white noise plus
        ``10 amplitude`` x uniform noise constant in y (zonal stripes), each zero-mean.

        Drawn on the CPU from ``torch.Generator().manual_seed(seed)`` in one call of shape
        ``[*batch, 2, ny + 1, nx]``, so batch member 0 equals an unbatched model with the same seed.
        """
        g = torch.Generator().manual_seed(int(seed))
        r = torch.rand(*self.batch, 2, self.ny + 1, self.nx, generator=g, dtype=torch.float64)
        q = amplitude * (r[..., :-1, :] + 10.0 * r[..., -1:, :])
        q = q - q.mean(dim=(-2, -1), keepdim=True)
        self.set_q(q.to(self.device, self.dtype))

    @property
    def qh(self) -> Tensor:
        """Spectral PV ``[*batch, 2, ny, nx//2+1]`` (a copy)."""
        return self._qh.clone()

    @property
    def ph(self) -> Tensor:
        """Spectral streamfunction (a copy)."""
        return self._invert(self._qh, torch.empty_like(self._ph))

    def _field(self, i: int) -> Tensor:
        if not self._real_valid:
            self._fill_real()
        return self._real[..., i, :, :, :].clone()

    @property
    def q(self) -> Tensor:
        """PV anomaly, real space ``[*batch, 2, ny, nx]`` (a copy; ``model.q = x`` calls set_q)."""
        return self._field(0)

    @q.setter
    def q(self, value: Tensor) -> None:
        self.set_q(value)

    @property
    def u(self) -> Tensor:
        """Zonal perturbation velocity u = -dpsi/dy (no background U)."""
        return self._field(1)

    @property
    def v(self) -> Tensor:
        """Meridional velocity v = dpsi/dx."""
        return self._field(2)

    @property
    def psi(self) -> Tensor:
        """Streamfunction (zero domain mean), real space."""
        return torch.fft.irfft2(self.ph, s=(self.ny, self.nx))

    @property
    def ufull(self) -> Tensor:
        """Full zonal velocity u + U_i."""
        return self.u + self._U

    # ----------------------------------------------------------------- kernel
    def _invert(self, qh: Tensor, out: Tensor) -> Tensor:
        """psi_h = A qh per wavenumber (2x2 solve of q = lap psi + stretching), into ``out``."""
        a = self._a
        q1, q2 = qh[..., 0, :, :], qh[..., 1, :, :]
        torch.mul(q1, a[0, 0], out=out[..., 0, :, :]).addcmul_(q2, a[0, 1])
        torch.mul(q1, a[1, 0], out=out[..., 1, :, :]).addcmul_(q2, a[1, 1])
        return out

    def _fill_real(self) -> Tensor:
        """Invert and transform: _ph, and _real = (q, u, v) with uh = -il ph, vh = ik ph."""
        ph = self._invert(self._qh, self._ph)
        spec = self._spec
        torch.mul(ph, self._mil, out=spec[..., 1, :, :, :])
        torch.mul(ph, self.ik, out=spec[..., 2, :, :, :])
        torch.fft.irfft2(spec, s=(self.ny, self.nx), out=self._real)
        self._real_valid = True
        return ph

    def _rhs(self, out: Tensor) -> Tensor:
        """Spectral dq/dt at the current state into ``out`` (no filter):
        -ik F[(u+U) q] - il F[v q] - ik Qy psi + [layer 2] rek K2 psi + parameterizations."""
        ph = self._fill_real()
        r = self._real
        q, u, v = r[..., 0, :, :, :], r[..., 1, :, :, :], r[..., 2, :, :, :]
        flux = self._flux
        torch.add(u, self._U, out=flux[..., 0, :, :, :]).mul_(q)
        torch.mul(v, q, out=flux[..., 1, :, :, :])
        fh = torch.fft.rfft2(flux, out=self._fluxh)
        torch.mul(fh[..., 0, :, :, :], self._mik, out=out)
        out.addcmul_(fh[..., 1, :, :, :], self._mil)
        out.addcmul_(ph, self._mikQy)
        out[..., 1, :, :].addcmul_(ph[..., 1, :, :], self._drag)
        if self.uv_parameterization is not None:
            du, dv = self.uv_parameterization(self)
            duvh = torch.fft.rfft2(torch.stack((du, dv), dim=-4).to(self.dtype))
            out.addcmul_(duvh[..., 1, :, :, :], self.ik).addcmul_(duvh[..., 0, :, :, :], self._mil)
        if self.q_parameterization is not None:
            out.add_(torch.fft.rfft2(self.q_parameterization(self).to(self.dtype)))
        return out

    def _step_once(self) -> None:
        """qh <- filter * (qh + dt (c0 dq + c1 dq_prev + c2 dq_prevprev)) (Euler / AB2 / AB3)."""
        dq, dq1, dq2 = self._dqh
        self._rhs(dq)
        c0, c1, c2 = _AB[self._ablevel]
        dt = self.cfg.dt
        qh = self._qh
        qh.add_(dq, alpha=c0 * dt)
        if c1:
            qh.add_(dq1, alpha=c1 * dt)
        if c2:
            qh.add_(dq2, alpha=c2 * dt)
        qh.mul_(self.filtr)
        self._dqh = [dq2, dq, dq1]  # the oldest buffer is overwritten next step
        self._ablevel = min(self._ablevel + 1, 2)
        self._real_valid = False
        self.n_steps += 1
        self.t += dt

    @torch.inference_mode()
    def step(self, n: int = 1) -> None:
        """Advance ``n`` time steps (no host-device synchronisation inside the loop)."""
        for _ in range(int(n)):
            self._step_once()

    def run(
        self,
        days: float,
        every: float | None = None,
        callback: Callable[[QGModel], None] | None = None,
        progress: bool = False,
        keep: bool = True,
    ) -> list[tuple[float, Tensor]]:
        """Run for ``days`` model days (rounded to whole steps).

        With ``every`` (seconds, rounded to whole steps, at least one) returns snapshots
        ``[(t, q), ...]`` taken every ``every`` seconds from the start of this call (not the
        initial state; none kept if ``keep=False``) and calls ``callback(model)`` at each;
        without ``every`` returns ``[]``.
        ``progress`` prints day, KE per layer and wall time to stderr about 20 times.
        """
        n_total = int(round(days * DAY / self.cfg.dt))
        k_snap = max(1, int(round(every / self.cfg.dt))) if every is not None else None
        k_prog = max(1, n_total // 20) if progress else None
        snaps: list[tuple[float, Tensor]] = []
        start, done = time.perf_counter(), 0
        while done < n_total:
            nxt = n_total
            for k in (k_snap, k_prog):
                if k is not None:
                    nxt = min(nxt, (done // k + 1) * k)
            self.step(nxt - done)
            done = nxt
            if k_snap is not None and done % k_snap == 0:
                if keep:
                    snaps.append((self.t, self.q))
                if callback is not None:
                    callback(self)
            if k_prog is not None and (done % k_prog == 0 or done == n_total):
                ke = self.ke().reshape(-1, 2).mean(0).tolist()
                print(
                    f"qg nx={self.nx}: day {self.t / DAY:8.1f} step {done}/{n_total} "
                    f"KE=({ke[0]:.3e}, {ke[1]:.3e}) m2/s2 {time.perf_counter() - start:6.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
        return snaps

    # ----------------------------------------------------------------- operators
    @torch.no_grad()
    def tendency(self) -> Tensor:
        """dq/dt in real space at the current state, parameterizations included, filter excluded."""
        out = torch.empty_like(self._ph)
        return torch.fft.irfft2(self._rhs(out), s=(self.ny, self.nx))

    def advect(self, field: Tensor, u: Tensor | None = None, v: Tensor | None = None) -> Tensor:
        """Flux-form advection div(u f, v f) computed with spectral derivatives.

        Default velocities are the model's full ones, ``u + U_i`` and ``v`` (then ``field`` is
        ``[..., 2, ny, nx]``); explicitly passed ``u``, ``v`` are used as given (full velocities).
        """
        if u is None:
            u = self.ufull
        if v is None:
            v = self.v
        fh = torch.fft.rfft2(torch.stack(torch.broadcast_tensors(u * field, v * field), dim=0))
        return torch.fft.irfft2(self.ik * fh[0] + self.il * fh[1], s=(self.ny, self.nx))

    def ddx(self, field: Tensor) -> Tensor:
        """Spectral d/dx of a real field ``[..., ny, nx]``."""
        return torch.fft.irfft2(self.ik * torch.fft.rfft2(field), s=(self.ny, self.nx))

    def ddy(self, field: Tensor) -> Tensor:
        """Spectral d/dy of a real field ``[..., ny, nx]``."""
        return torch.fft.irfft2(self.il * torch.fft.rfft2(field), s=(self.ny, self.nx))

    # ----------------------------------------------------------------- diagnostics
    def ke(self) -> Tensor:
        """Kinetic energy per layer, 0.5 <u^2 + v^2> (domain mean), ``[*batch, 2]``."""
        u, v = self.u, self.v
        return 0.5 * (u**2 + v**2).mean(dim=(-2, -1))

    def energy(self) -> Tensor:
        """Total energy per unit mass ``[*batch]`` (pyqg's KE plus APE):
        sum_i (H_i/H) 0.5 <|grad psi_i|^2> + 0.5 (H1 H2 / H^2) rd^-2 <(psi1 - psi2)^2>."""
        cfg = self.cfg
        w = torch.tensor([cfg.H1 / cfg.H, cfg.H2 / cfg.H], dtype=self.dtype, device=self.device)
        psi = self.psi
        ape = 0.5 * cfg.H1 * cfg.H2 / cfg.H**2 / cfg.rd**2 * ((psi[..., 0, :, :] - psi[..., 1, :, :]) ** 2)
        return (self.ke() * w).sum(-1) + ape.mean(dim=(-2, -1))

    def enstrophy(self) -> Tensor:
        """Enstrophy per layer, 0.5 <q_i^2> (domain mean, not depth weighted), ``[*batch, 2]``."""
        return 0.5 * (self.q**2).mean(dim=(-2, -1))

    def cfl(self) -> Tensor:
        """max(|u + U|, |v|) dt / dx per batch member."""
        m = torch.maximum(self.ufull.abs(), self.v.abs()).amax(dim=(-3, -2, -1))
        return m * self.cfg.dt / self.cfg.dx

    def ke_spectrum(self) -> tuple[Tensor, Tensor]:
        """Isotropic KE spectrum per layer: ``(kr [nk], E [*batch, 2, nk])``, ``nk = nx // 2``.

        Bin j (1..nx/2) holds the modes with ``j - 1/2 <= |K| / dk < j + 1/2``, ``kr = j dk``
        (rad/m, dk = 2 pi / L), ``E = sum_bin 0.5 K^2 |psi_h|^2 / (nx ny)^2 / dk`` (rfft modes
        counted twice except k = 0 and Nyquist), so ``sum(E) dk`` is the layer KE without the
        corner modes ``|K| >= (nx/2 + 1/2) dk``.
        """
        n = self.nx
        dk = 2.0 * math.pi / self.cfg.L
        j = torch.round(torch.sqrt(self.wv2) / dk).long()
        w = torch.full_like(self.wv2, 2.0)
        w[:, 0] = 1.0
        w[:, -1] = 1.0
        dens = 0.5 * self.wv2 * w * self.ph.abs() ** 2 / (n * n) ** 2 / dk
        keep = (j >= 1) & (j <= n // 2)
        idx = (j[keep] - 1).to(self.device)
        spec = torch.zeros(*self.batch, 2, n // 2, dtype=self.dtype, device=self.device)
        spec.index_add_(-1, idx, dens[..., keep])
        kr = dk * torch.arange(1, n // 2 + 1, dtype=self.dtype, device=self.device)
        return kr, spec


# --------------------------------------------------------------------- coarse-graining
@functools.lru_cache(maxsize=32)
def _coarse_kernel(nx_lo: int, filter: str, filterfac: float) -> Tensor:
    """Real spectral multiplier [nx_lo, nx_lo//2+1] (float64, CPU), zero on the Nyquist row/column."""
    ly, kx = _wavenumbers(nx_lo, 2.0 * math.pi)  # integer mode numbers
    kd = torch.sqrt(kx**2 + ly**2) * (2.0 * math.pi / nx_lo)  # |K| dx_lo
    if filter == "gaussian":
        g = torch.exp(-(kd**2) * 4.0 / 24.0)  # exp(-K^2 (2 dx_lo)^2 / 24)
    elif filter == "sharp":
        g = torch.ones_like(kd)
    elif filter == "model":
        cphi = 0.65 * math.pi
        g = torch.where(kd > cphi, torch.exp(-filterfac * (kd - cphi) ** 4), 1.0)
    else:
        raise ValueError(f"unknown filter {filter!r} (gaussian, sharp, model)")
    g[nx_lo // 2, :] = 0.0
    g[:, -1] = 0.0
    return g


def coarsen(field: Tensor, nx_lo: int, filter: str = "gaussian") -> Tensor:
    """Filter and coarse-grain a real periodic field ``[..., n, n]`` to ``[..., nx_lo, nx_lo]``.

    Spectral truncation to the wavenumbers ``|k|, |l| < nx_lo / 2`` of the coarse grid (its
    Nyquist row and column are zeroed, so the operator commutes exactly with spectral
    derivatives and the model's inversion) times a real filter ``G(K)``:

    * ``"gaussian"`` (default; pyqg_parameterization_benchmarks ``Operator2``):
      ``G = exp(-K^2 (2 dx_lo)^2 / 24)``, i.e. a Gaussian kernel of filter width
      ``Delta = 2 dx_lo`` (standard deviation ``Delta / sqrt(12) = dx_lo / sqrt(3)``), with
      ``dx_lo = L / nx_lo`` tied to the coarsening factor;
    * ``"sharp"``: ``G = 1`` (truncation only);
    * ``"model"``: the coarse model's exponential filter (``Operator1``, filterfac 23.6).

    Linear, preserves the domain mean (G(0) = 1), independent of L.
    """
    n = field.shape[-1]
    if field.shape[-2] != n:
        raise ValueError(f"coarsen needs a square field, got {tuple(field.shape)}")
    if nx_lo % 2 or nx_lo > n:
        raise ValueError(f"nx_lo must be even and <= {n}, got {nx_lo}")
    h = nx_lo // 2
    fh = torch.fft.rfft2(field)
    trunc = torch.cat((fh[..., :h, : h + 1], fh[..., n - h :, : h + 1]), dim=-2)
    g = _coarse_kernel(nx_lo, filter, 23.6).to(field.device, field.dtype)
    return torch.fft.irfft2(trunc * (g * (nx_lo / n) ** 2), s=(nx_lo, nx_lo))


def _physics(cfg: QGConfig) -> tuple[float, ...]:
    return (cfg.L, cfg.beta, cfg.rek, cfg.delta, cfg.rd, cfg.H1, cfg.U1, cfg.U2)


@torch.no_grad()
def subgrid_forcing(hi: QGModel, lo_cfg: QGConfig, filter: str = "gaussian") -> dict[str, Tensor]:
    """Coarse inputs and exact subgrid forcings of a high-resolution state (bar = ``coarsen``).

    Returns ``q, u, v`` (= bar of the high-res fields) and, with ``adv(f) = div((u + U) f, v f)``
    of each model (``QGModel.advect``; the background U cancels)::

        Sq = adv_lo(bar q) - bar(adv_hi(q))      Su, Sv: the same for u, v

    Sign: these are *tendencies*. d(bar q)/dt = lo.tendency()(bar q) + Sq exactly, so a
    low-res model with ``dq += Sq`` (``q_parameterization``) or ``(du, dv) += (Su, Sv)``
    (``uv_parameterization``; its curl is the relative-vorticity part of Sq) follows the
    coarsened high-res trajectory. This is minus pyqg_parameterization_benchmarks'
    ``subgrid_forcing`` (there ``bar(adv_hi) - adv_lo``) and equals its ``q_forcing_total``.
    """
    if _physics(hi.cfg) != _physics(lo_cfg):
        raise ValueError("lo_cfg must have the same physical parameters as the high-res model")
    lo = QGModel(lo_cfg, batch=hi.batch, device=hi.device, dtype=hi.dtype)
    n = lo_cfg.nx
    q, u, v = hi.q, hi.u, hi.v
    qc = coarsen(q, n, filter)
    lo.set_q(qc)
    uc, vc = lo.u, lo.v
    out = {"q": qc, "u": uc, "v": vc}
    for name, f_hi, f_lo in (("Sq", q, qc), ("Su", u, uc), ("Sv", v, vc)):
        out[name] = lo.advect(f_lo) - coarsen(hi.advect(f_hi), n, filter)
    return out


# --------------------------------------------------------------------- runs
def ke_timeseries(
    model: QGModel, days: float, every: float = DAY, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """Run ``model`` for ``days`` and record per-layer KE every ``every`` seconds:
    ``(t [T] seconds, ke [T, *batch, 2])`` (CPU tensors)."""
    ts: list[float] = []
    kes: list[Tensor] = []

    def rec(m: QGModel) -> None:
        ts.append(m.t)
        kes.append(m.ke().cpu())

    model.run(days, every=every, callback=rec, progress=progress, keep=False)
    t = torch.tensor(ts, dtype=torch.float64)
    ke = torch.stack(kes) if kes else torch.zeros(0, *model.batch, 2, dtype=model.dtype)
    return t, ke
