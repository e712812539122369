"""sigreg: the Epps-Pulley normality statistic, SIGReg and the LeJEPA loss on any array API.

Every function infers the array namespace from its input (numpy, torch, jax, cupy,
array_api_strict) and returns results in the same namespace, dtype and device. No
framework is imported by ``import sigreg``.
"""

from sigreg.collective import Collective
from sigreg.directions import sample_directions
from sigreg.gof import EppsPulleyResult, epps_pulley_test
from sigreg.lejepa import LeJEPALoss, lejepa_loss, lejepa_loss_vjp
from sigreg.quadrature import null_expectation, trapezoid_rule
from sigreg.sliced import sigreg, sliced_epps_pulley, sliced_epps_pulley_vjp
from sigreg.univariate import epps_pulley, epps_pulley_vjp

__all__ = [
    "Collective",
    "EppsPulleyResult",
    "LeJEPALoss",
    "epps_pulley",
    "epps_pulley_test",
    "epps_pulley_vjp",
    "lejepa_loss",
    "lejepa_loss_vjp",
    "null_expectation",
    "sample_directions",
    "sigreg",
    "sliced_epps_pulley",
    "sliced_epps_pulley_vjp",
    "trapezoid_rule",
]

__version__ = "0.1.0"
