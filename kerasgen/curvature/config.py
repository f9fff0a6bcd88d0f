"""How A and C are estimated (``CurvatureConfig``) and the error a bound run raises."""

from __future__ import annotations

from dataclasses import dataclass

from kerasgen.store import StoreError


class CurvatureError(StoreError):
    """The bound cannot be computed as asked; the message says why and what to do.
    (A :class:`~kerasgen.store.StoreError`, so ``kerasgen bound`` prints it plainly.)"""


@dataclass(frozen=True)
class CurvatureConfig:
    """How A and C are estimated (see the module docstring)."""

    exact_limit: int = 5000          # dense matrices up to this many parameters
    treatment: str = "project"       # "project" | "damp"
    project_rtol: float | None = None  # keep directions with eigenvalue > rtol * max
                                       # (None: AUTO_RTOL by precision, 1e-9 / 1e-5)
    damping_rtol: float = 1e-3       # "damp" and whole-space solves: l = rtol * lambda_max
    chunk: int = 256                 # examples per TensorFlow call (network path)
    pfor_rows: int = 128             # Hessian rows vectorized at once (network path)
    seed: int = 0                    # probes and example subsets
    # whole network (matrix-free)
    lanczos_steps: int = 40
    whole_space: bool = True
    hvp_examples: int | None = 512   # examples behind whole-space HVPs (None: all used)
    cg_probes: int = 3
    cg_tol: float = 1e-3
    cg_maxiter: int = 150
    slq_probes: int = 4
    slq_steps: int = 24

    def __post_init__(self):
        if self.treatment not in ("project", "damp"):
            raise CurvatureError(f"treatment must be 'project' or 'damp', not {self.treatment!r}")



__all__ = ["CurvatureConfig", "CurvatureError"]
