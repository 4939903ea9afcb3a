"""Nuisance modelling: how systematic uncertainties deform the reference, log r(x; nu), with their
Gaussian auxiliary constraints, the fit over nu at fixed f, nu as a torch parameter for backends
that train it jointly, and the training samples of the shape-nuisance Taylor learners."""

from .model import (
    NormalizationNuisance,
    Nuisance,
    NuisanceFit,
    NuisanceModel,
    NuisanceTerms,
    ShapeNuisance,
    TaylorCoefficients,
    auxiliary_penalty,
)
from .taylor_training import MAX_TAYLOR_DEGREE, TaylorTrainingSet, taylor_training_set
from .trainable import TrainableNuisances

__all__ = ["NormalizationNuisance", "Nuisance", "NuisanceFit", "NuisanceModel", "NuisanceTerms", "ShapeNuisance",
           "TaylorCoefficients", "auxiliary_penalty", "MAX_TAYLOR_DEGREE", "TaylorTrainingSet", "taylor_training_set",
           "TrainableNuisances"]
