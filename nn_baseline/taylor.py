"""NN learning of shape-nuisance Taylor coefficients delta_k(x), as in the NPLM papers: one small
network per coefficient ("NN 1, NN 2, ..."), log r(x; nu) = sum_k delta_k(x) nu^k.

Same parametrised-classifier loss as nplm_kernel.KernelTaylorLearner (without the RKHS
penalty): for each shifted sample R_i at nu_i, a weighted logistic regression of R_i against the
nominal R_0 with log-odds s_i(x) = sum_k (nu_i / s)^k g_k(x), delta_k = g_k / s^k, s = max |nu_i|.
Trained full-batch with Adam.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch.nn import functional

from nplm_kernel.contract import require_fitted
from nplm_kernel.core.devices import resolve_device
from nplm_kernel.core.exceptions import FitError
from nplm_kernel.core.samples import as_events, check_positive_integer, check_positive_number
from nplm_kernel.nuisance.taylor_training import taylor_training_set

from .network import ClippedMLP, check_architecture


class NNTaylorLearner(BaseEstimator):
    """Learns delta_k(x), k = 1..degree, with one ClippedMLP per coefficient.

    Parameters
    ----------
    degree
        1 or 2.
    hidden
        Hidden-layer widths.
    activation
        Hidden activation.
    weight_clip
        Bound on every weight matrix entry (None: no clipping).
    epochs, learning_rate
        Full-batch Adam.
    seed
        Seed of the initialisation.
    device
        'cpu', 'cuda' or 'auto': where the networks train and predict.

    Attributes
    ----------
    networks_
        One network per coefficient.
    input_mean_, input_scale_, nu_scale_
        The inputs' standardisation and the scale s of nu.
    loss_
        The final loss per unit weight.
    n_features_in_
        Number of input variables.
    """

    #: The hyperparameters that play the roles the shared layer knows (contract.SETTING_ROLES).
    setting_roles = {"device": "device", "seed": "seed"}

    def __init__(self, degree: int = 2, hidden: tuple[int, ...] = (16, 16), activation: str = "sigmoid",
                 weight_clip: float | None = None, epochs: int = 3000, learning_rate: float = 1e-2,
                 seed: int | None = 0, device: str = "cpu"):
        self.degree = degree
        self.hidden = hidden
        self.activation = activation
        self.weight_clip = weight_clip
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed
        self.device = device

    def _architecture(self, n_features: int) -> tuple[int, ...]:
        return check_architecture((n_features, *self.hidden, 1), n_features)

    def fit(self, x_nominal: np.ndarray, w_nominal: float | np.ndarray,
            shifted: Sequence[tuple[float, np.ndarray, float | np.ndarray]]) -> NNTaylorLearner:
        """Learn delta_k from the nominal sample (x, w) and [(nu_i, x_i, w_i), ...] at shifted nu_i."""
        check_positive_integer(self.epochs, "epochs")
        check_positive_number(self.learning_rate, "learning_rate")
        if self.weight_clip is not None:
            check_positive_number(self.weight_clip, "weight_clip")
        training = taylor_training_set(x_nominal, w_nominal, shifted, self.degree)
        architecture = self._architecture(training.nominal.shape[1])

        device = resolve_device(self.device)

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32, device=device)

        powers = training.powers
        points = tensor(np.concatenate([training.nominal] + [sample for _, sample, _ in training.shifted]))
        n_nominal = len(training.nominal)
        bounds = np.cumsum([n_nominal] + [len(sample) for _, sample, _ in training.shifted])
        monomials = [tensor(values) for values, _, _ in training.shifted]
        nominal_w = tensor(training.nominal_weights)
        shifted_w = [tensor(weights) for _, _, weights in training.shifted]
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(self.seed).generate_state(1)[0]))
        networks = [ClippedMLP(architecture, self.activation, generator).to(device) for _ in powers]
        parameters = [parameter for network in networks for parameter in network.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=self.learning_rate, eps=1e-7)

        def loss_value() -> torch.Tensor:
            outputs = torch.stack([network(points) for network in networks], dim=1)
            nominal_outputs = outputs[:n_nominal]
            loss = torch.zeros((), device=device)
            for index, power_values in enumerate(monomials):
                shifted_outputs = outputs[bounds[index] : bounds[index + 1]]
                loss = loss + nominal_w @ functional.softplus(nominal_outputs @ power_values)
                loss = loss + shifted_w[index] @ functional.softplus(-(shifted_outputs @ power_values))
            return loss

        for _ in range(self.epochs):
            optimizer.zero_grad()
            loss = loss_value()
            loss.backward()
            optimizer.step()
            if self.weight_clip is not None:
                for network in networks:
                    network.clip_weights_(float(self.weight_clip))
        with torch.no_grad():
            final = float(loss_value())
        if not np.isfinite(final):
            raise FitError("NNTaylorLearner: the training loss became non-finite; lower the learning rate.")
        self.networks_ = [network.eval() for network in networks]
        self.input_mean_, self.input_scale_ = training.input_mean, training.input_scale
        self.nu_scale_ = training.nu_scale
        self.n_features_in_ = training.nominal.shape[1]
        self.loss_ = final
        return self

    def coefficients(self, x: np.ndarray) -> np.ndarray:
        """delta_k(x), k = 1..degree, for x (n, d) in input units: float64 (n, degree)."""
        require_fitted(self, "networks_")
        points = torch.as_tensor((as_events(x, "x", self.n_features_in_) - self.input_mean_) / self.input_scale_,
                                 dtype=torch.float32, device=next(self.networks_[0].parameters()).device)
        with torch.no_grad():
            outputs = torch.stack([network(points) for network in self.networks_], dim=1).cpu().numpy()
        outputs = outputs.astype(np.float64)
        return outputs / self.nu_scale_ ** np.arange(1, self.degree + 1)

    def fitted_state(self) -> dict:
        """Network weights and fitted attributes, for nplm_kernel.save_model."""
        require_fitted(self, "networks_")
        weights = {f"network{index}.{name}": value.detach().cpu().numpy()
                   for index, network in enumerate(self.networks_) for name, value in network.state_dict().items()}
        return {**weights, "input_mean_": self.input_mean_, "input_scale_": self.input_scale_,
                "nu_scale_": self.nu_scale_, "n_features_in_": self.n_features_in_, "loss_": self.loss_}

    def fitted_state_spec(self) -> dict:
        """The attributes fitted_state() saves and their shapes (io.models.check_fitted_state);
        "d" is the number of input features."""
        network = ClippedMLP(self._architecture(1), self.activation, torch.Generator().manual_seed(0))
        shapes = {name: tuple(tensor.shape) for name, tensor in network.state_dict().items()}
        shapes["layers.0.weight"] = (shapes["layers.0.weight"][0], "d")
        return {**{f"network{index}.{name}": shape for index in range(int(self.degree)) for name, shape in shapes.items()},
                "input_mean_": ("d",), "input_scale_": ("d",), "nu_scale_": (), "n_features_in_": (), "loss_": ()}

    def restore_fitted_state(self, state: dict) -> None:
        """Rebuild the networks and set the fitted attributes from fitted_state()'s output."""
        self.hidden = tuple(self.hidden)
        architecture = self._architecture(int(state["n_features_in_"]))
        self.networks_ = []
        for index in range(self.degree):
            network = ClippedMLP(architecture, self.activation, torch.Generator().manual_seed(0))
            prefix = f"network{index}."
            network.load_state_dict({name.removeprefix(prefix): torch.as_tensor(value)
                                     for name, value in state.items() if name.startswith(prefix)})
            self.networks_.append(network.to(resolve_device(self.device)).eval())
        for name, value in state.items():
            if not name.startswith("network"):
                setattr(self, name, value)
