"""sigreg: the Epps-Pulley normality statistic, SIGReg and the LeJEPA loss on any array API.

Every function infers the array namespace from its input (numpy, torch, jax, cupy,
array_api_strict) and returns results in the same namespace, dtype and device. No
framework is imported by ``import sigreg``.
"""

from sigreg._result import GoodnessOfFitResult
from sigreg.collective import Collective
from sigreg.directions import sample_directions
from sigreg.edf import anderson_darling, cramer_von_mises, watson
from sigreg.edf_test import (
    anderson_darling_test,
    cramer_von_mises_test,
    kolmogorov_smirnov_test,
    watson_test,
)
from sigreg.gof import epps_pulley_test
from sigreg.lejepa import LeJEPALoss, lejepa_loss, lejepa_loss_vjp
from sigreg.moments import extended_jarque_bera, mean_variance
from sigreg.multivariate import henze_zirkler, henze_zirkler_test
from sigreg.normality import normality_test
from sigreg.quadrature import null_expectation, trapezoid_rule
from sigreg.sliced import sigreg, sliced_epps_pulley, sliced_epps_pulley_vjp
from sigreg.sliced_gof import sliced_statistic, sliced_test
from sigreg.univariate import epps_pulley, epps_pulley_vjp

__all__ = [
    "Collective",
    "GoodnessOfFitResult",
    "LeJEPALoss",
    "anderson_darling",
    "anderson_darling_test",
    "cramer_von_mises",
    "cramer_von_mises_test",
    "epps_pulley",
    "epps_pulley_test",
    "epps_pulley_vjp",
    "extended_jarque_bera",
    "henze_zirkler",
    "henze_zirkler_test",
    "kolmogorov_smirnov_test",
    "lejepa_loss",
    "lejepa_loss_vjp",
    "mean_variance",
    "normality_test",
    "null_expectation",
    "sample_directions",
    "sigreg",
    "sliced_epps_pulley",
    "sliced_epps_pulley_vjp",
    "sliced_statistic",
    "sliced_test",
    "trapezoid_rule",
    "watson",
    "watson_test",
]

__version__ = "0.1.0"
