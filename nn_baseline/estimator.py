"""NNNPLM: the original weight-clipped NPLM network as a scikit-learn-style estimator.

Trains f on the full batch by minimising the NPLM loss itself,
    L[f] = sum_R w_R (exp(f(x) + o_R) - 1) - sum_D (f(x) + o_D),
with Adam at Keras defaults (lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-7) and every weight matrix
clipped to [-weight_clip, weight_clip] after each step; t = -2 L at the end of training.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from nplm_kernel.contract import finish_fit, require_fitted
from nplm_kernel.core.devices import resolve_device
from nplm_kernel.core.exceptions import ConfigurationError, FitError
from nplm_kernel.core.samples import (
    check_choice,
    check_positive_integer,
    check_positive_number,
    fitted_inputs,
    reference_standardization,
    standardized,
    validate_samples,
)
from nplm_kernel.nuisance import NuisanceTerms, TrainableNuisances

from .network import ACTIVATIONS, BIAS_INITIALISATIONS, ClippedMLP, check_architecture

#: Keras' Adam epsilon (torch's default is 1e-8).
KERAS_ADAM_EPSILON = 1e-7


def _keras_adam(parameters: list[torch.nn.Parameter], learning_rate: float) -> torch.optim.Adam:
    """Adam with Keras' defaults; the fused kernel (a few times cheaper per step for these tiny
    networks) where this torch build has it for the device. Keras adds eps to sqrt(v) and torch to
    sqrt(v / (1 - beta2^t)): the two differ only while 1 - beta2^t is far from 1 (first ~10^3 steps)."""
    settings = dict(lr=learning_rate, betas=(0.9, 0.999), eps=KERAS_ADAM_EPSILON)
    try:
        return torch.optim.Adam(parameters, fused=True, **settings)
    except RuntimeError:
        return torch.optim.Adam(parameters, **settings)


class NNNPLM(BaseEstimator):
    """Weight-clipped NN NPLM estimator (same contract as KernelNPLM); trains nuisance parameters
    jointly with f when the shared layer passes nuisance_terms (the backend contract's optional capability).

    Parameters
    ----------
    architecture
        Layer widths (d, hidden..., 1), e.g. (1, 4, 1) or (5, 5, 5, 5, 1); None: (d, 4, 1) for d input
        variables.
    weight_clip
        c, the bound on every weight matrix entry after each step.
    activation
        Hidden activation ('sigmoid' as in the papers, 'tanh', 'relu').
    bias_init
        'zeros' (Keras Dense default) or 'glorot_uniform', which NPLM_package 0.0.6 really uses (its
        network class passes no initializer to Keras' add_weight): network.BIAS_INITIALISATIONS.
    epochs
        Full-batch optimiser steps (the papers use 1e5 to 3e5).
    learning_rate
        Adam learning rate (Keras default 1e-3).
    checkpoint_every
        Record L every this many epochs in loss_history_.
    standardize
        Scale inputs by the reference's weighted mean and standard deviation.
    seed
        Seed of the weight initialisation.
    device
        'cpu', 'cuda' (or 'cuda:N'), or 'auto' (CUDA when available).
    progress
        Show a progress bar over the epochs on stderr (on by default on the command line).

    Attributes
    ----------
    network_
        The trained ClippedMLP.
    n_parameters_
        Its number of trainable parameters (the papers' chi2 target dof).
    loss_
        L at the final f (float64, offsets included; without A(nu)); t_ = -2 loss_.
    fit_
        contract.BackendFit: f on the training points.
    converged_
        None: a fixed number of epochs has no convergence criterion.
    diagnostics_, loss_history_
        A (k, 2) array of (epoch, L), L the float32 training loss before that epoch's step.
    nuisance_values_
        nu, when trained jointly.
    fit_time_, input_mean_, input_scale_
        Seconds of the fit; the standardisation.
    """

    def __init__(
        self,
        architecture: tuple[int, ...] | None = None,
        weight_clip: float = 9.0,
        activation: str = "sigmoid",
        bias_init: str = "zeros",
        epochs: int = 100_000,
        learning_rate: float = 1e-3,
        checkpoint_every: int = 1000,
        standardize: bool = True,
        seed: int | None = 0,
        device: str = "cpu",
        progress: bool = False,
    ):
        self.architecture = architecture
        self.weight_clip = weight_clip
        self.activation = activation
        self.bias_init = bias_init
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.checkpoint_every = checkpoint_every
        self.standardize = standardize
        self.seed = seed
        self.device = device
        self.progress = progress

    #: Settings that change how t is computed, not its value (left out of a campaign's identity).
    execution_settings = ("device", "progress")

    #: NPLMTest lets this backend train nu jointly with f (the original NPLM procedure).
    fits_nuisances_jointly = True
    #: Each toy trains its own network: no batched fits.
    fits_batches = False
    #: The hyperparameters that play the roles the shared layer knows (contract.SETTING_ROLES).
    setting_roles = {"device": "device", "seed": "seed", "progress": "progress"}

    def layer_widths(self, n_features: int) -> tuple[int, ...]:
        """The layer widths for d = n_features inputs (the default: (d, 4, 1))."""
        return check_architecture((n_features, 4, 1) if self.architecture is None else self.architecture, n_features)

    def check_settings(self) -> None:
        """ConfigurationError naming the first bad hyperparameter (the backend contract)."""
        if self.architecture is not None:
            check_architecture(self.architecture)
        check_positive_number(self.weight_clip, "weight_clip")
        check_positive_number(self.learning_rate, "learning_rate")
        check_positive_integer(self.epochs, "epochs")
        check_positive_integer(self.checkpoint_every, "checkpoint_every")
        check_choice(self.bias_init, BIAS_INITIALISATIONS, "bias_init")
        check_choice(self.activation, ACTIVATIONS, "activation")

    def fit(
        self,
        x_data: np.ndarray,
        x_ref: np.ndarray,
        w_ref: float | np.ndarray,
        offset_data: np.ndarray | None = None,
        offset_ref: np.ndarray | None = None,
        nuisance_terms: NuisanceTerms | None = None,
        nuisance_start: np.ndarray | None = None,
    ) -> NNNPLM:
        """Train f ~ log n(x|D) / n(x|R) on data (N_D, d), reference (N_R, d) and weights w_R.

        With nuisance_terms (from the shared layer, NPLMTest), nu is trained jointly with f from
        nuisance_start on L[f; log r(nu)] + A(nu); the offsets must then be None."""
        self.check_settings()
        samples = validate_samples(x_data, x_ref, w_ref, offset_data, offset_ref, owner="NNNPLM")
        architecture = self.layer_widths(samples.n_features)
        device = resolve_device(self.device)
        mean, scale = reference_standardization(samples.x_ref, samples.w_ref, self.standardize)

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32, device=device)

        points = standardized(np.concatenate([samples.x_data, samples.x_ref]), mean, scale, "x_data and x_ref",
                              np.float32)
        points_by_feature = tensor(points).T.contiguous()
        n_data = samples.n_data
        offset_data_t, offset_ref_t = tensor(samples.offset_data), tensor(samples.offset_ref)
        w_ref_t = tensor(samples.w_ref)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(self.seed).generate_state(1)[0]))
        network = ClippedMLP(architecture, self.activation, generator, self.bias_init).to(device)
        nuisances = None
        if nuisance_terms is not None:
            if offset_data is not None or offset_ref is not None:
                raise ConfigurationError("NNNPLM.fit: pass either offsets or nuisance_terms, not both.")
            start = nuisance_terms.central_values if nuisance_start is None else nuisance_start
            nuisances = TrainableNuisances(nuisance_terms, start, torch.float32, device)
        optimizer = _keras_adam(list(network.parameters()) + ([nuisances.parameter] if nuisances else []),
                                self.learning_rate)
        clip = float(self.weight_clip)
        history = []
        start = time.perf_counter()
        epochs = tqdm(range(1, self.epochs + 1), desc="NN epochs", unit="epoch", disable=not self.progress,
                      file=sys.stderr, mininterval=1.0)
        for epoch in epochs:
            checkpoint = epoch % self.checkpoint_every == 0 or epoch == self.epochs
            if nuisances is not None:
                offset_data_t, offset_ref_t = nuisances.offsets()
            loss, loss_by_offset_ref = network.nplm_loss_backward(points_by_feature, n_data, w_ref_t, offset_data_t,
                                                                  offset_ref_t, with_loss=checkpoint)
            if nuisances is not None:
                nuisances.set_gradient(loss_by_offset_ref)
                if checkpoint:
                    loss = loss + nuisances.auxiliary_penalty()
            optimizer.step()
            network.clip_weights_(clip)
            if checkpoint:
                value = float(loss)
                if not np.isfinite(value):
                    raise FitError(f"NNNPLM: the NPLM loss became non-finite at epoch {epoch}; lower the "
                                   "learning rate or the weight clip.")
                history.append((epoch, value))
        self.fit_time_ = time.perf_counter() - start
        self.network_ = network.eval()
        self.n_parameters_ = network.n_parameters
        self.input_mean_, self.input_scale_ = mean, scale
        self.n_features_in_ = samples.n_features
        self.feature_names_in_ = None if samples.feature_names is None else list(samples.feature_names)
        self.loss_history_ = np.array(history)
        offset_data, offset_ref = None, None
        if nuisances is not None:
            self.nuisance_values_ = nuisances.nu()
            offset_data, offset_ref = nuisance_terms.offsets(self.nuisance_values_)
        with torch.no_grad():
            fitted = self.network_(tensor(points)).cpu().numpy().astype(np.float64)
        finish_fit(self, samples, fitted[:n_data], fitted[n_data:], None, self.loss_history_, offset_data, offset_ref)
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """f(x) for x of shape (n, d) in input units; float64 (n,)."""
        require_fitted(self, "network_")
        points = fitted_inputs(x, self.n_features_in_, self.feature_names_in_, self.input_mean_, self.input_scale_,
                               np.float32)
        parameter = next(self.network_.parameters())
        with torch.no_grad():
            values = self.network_(torch.as_tensor(points, dtype=torch.float32, device=parameter.device))
        return values.cpu().numpy().astype(np.float64)

    def fitted_state(self) -> dict:
        """The fitted attributes and network weights, for nplm_kernel.save_model."""
        require_fitted(self, "network_")
        weights = {f"network.{name}": tensor.detach().cpu().numpy() for name, tensor in self.network_.state_dict().items()}
        return {
            **weights, "input_mean_": self.input_mean_, "input_scale_": self.input_scale_,
            "n_features_in_": self.n_features_in_, "feature_names_in_": self.feature_names_in_,
            "n_parameters_": self.n_parameters_,
            "loss_": self.loss_, "t_": self.t_, "loss_history_": self.loss_history_, "fit_time_": self.fit_time_,
        }

    def fitted_state_spec(self) -> dict:
        """The attributes fitted_state() saves and their shapes (io.models.check_fitted_state); "d"
        stands for the number of input variables when the architecture is the default."""
        widths = self.layer_widths(1) if self.architecture is None else check_architecture(self.architecture)
        network = ClippedMLP(widths, self.activation, torch.Generator().manual_seed(0))
        shapes = {f"network.{name}": tuple(tensor.shape) for name, tensor in network.state_dict().items()}
        inputs = widths[0] if self.architecture is not None else "d"
        shapes["network.layers.0.weight"] = (widths[1], inputs)
        return {**shapes, "input_mean_": (inputs,), "input_scale_": (inputs,), "n_features_in_": (),
                "feature_names_in_": None, "n_parameters_": (), "loss_": (), "t_": (), "loss_history_": ("k", 2),
                "fit_time_": ()}

    def restore_fitted_state(self, state: dict) -> None:
        """Rebuild the network and set the fitted attributes from fitted_state()'s output (as
        saved, shapes checked)."""
        if self.architecture is not None:
            self.architecture = tuple(self.architecture)
        network = ClippedMLP(self.layer_widths(int(state["n_features_in_"])), self.activation,
                             torch.Generator().manual_seed(0))
        weights = {name.removeprefix("network."): torch.as_tensor(value) for name, value in state.items()
                   if name.startswith("network.")}
        network.load_state_dict(weights)
        self.network_ = network.to(resolve_device(self.device)).eval()
        for name, value in state.items():
            if not name.startswith("network."):
                setattr(self, name, value)
        self.converged_, self.diagnostics_ = None, self.loss_history_
