"""The original NPLM network: a dense MLP with sigmoid hidden activations, a linear output and
every weight matrix clipped to [-c, c] after each optimiser step (biases are not clipped).

Training uses a hand-written forward and backward pass of the NPLM loss in feature-major layout
(activations of shape (width, n)), where every broadcast runs along contiguous memory: about 4x
more epochs per second on CPU than autograd on (n, width) activations, with the same gradients
(tests compare them with autograd)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nplm_kernel.core.exceptions import ConfigurationError
from nplm_kernel.core.samples import check_choice
from nplm_kernel.core.statistic import extended_likelihood, extended_likelihood_slope

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def _multiply_by_derivative_(delta: torch.Tensor, activation: str, output: torch.Tensor) -> None:
    """delta *= s'(z), written with the activation's output a = s(z)."""
    if activation == "sigmoid":
        delta.mul_(output - output.square())
    elif activation == "tanh":
        delta.mul_(1.0 - output.square())
    else:
        delta.mul_(output > 0)


def check_architecture(architecture: Sequence[int], n_features: int | None = None) -> tuple[int, ...]:
    """Layer widths (inputs, hidden..., 1) as a tuple; ConfigurationError if malformed."""
    try:
        widths = tuple(int(width) for width in architecture)
    except (TypeError, ValueError):
        raise ConfigurationError(f"architecture must list integer layer widths, got {architecture!r}.") from None
    if len(widths) < 2 or any(width < 1 for width in widths):
        raise ConfigurationError(f"architecture must list at least 2 positive layer widths, got {architecture!r}.")
    if widths[-1] != 1:
        raise ConfigurationError(f"architecture must end with 1 output (f(x)), got {architecture!r}.")
    if n_features is not None and widths[0] != n_features:
        raise ConfigurationError(
            f"architecture starts with {widths[0]} input(s) but the samples have {n_features} feature(s)."
        )
    return widths


def parameter_count(architecture: Sequence[int]) -> int:
    """Trainable parameters (weights and biases) of a dense network with these layer widths: the
    papers' chi2 target dof."""
    widths = check_architecture(architecture)
    return sum((n_in + 1) * n_out for n_in, n_out in zip(widths, widths[1:]))


#: How ClippedMLP initialises its biases (the `bias_init` setting).
BIAS_INITIALISATIONS = {
    "zeros": "b = 0 (the Keras Dense default)",
    "glorot_uniform": "b ~ U(-sqrt(3 / n_out), sqrt(3 / n_out)): Keras' glorot-uniform of a vector (fan-in = fan-out "
                      "= n_out), what Keras' add_weight draws when no initializer is passed, as in the NPLM_package "
                      "0.0.6 network class",
}


class ClippedMLP(nn.Module):
    """f(x) = W_L s(... s(W_1 x + b_1) ...) + b_L with s the hidden activation.

    Weights are glorot(Xavier)-uniform; biases as `bias_init` says (BIAS_INITIALISATIONS); both
    drawn from `generator`."""

    def __init__(self, architecture: Sequence[int], activation: str, generator: torch.Generator,
                 bias_init: str = "zeros"):
        super().__init__()
        widths = check_architecture(architecture)
        check_choice(activation, ACTIVATIONS, "activation")
        check_choice(bias_init, BIAS_INITIALISATIONS, "bias_init")
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(widths, widths[1:]))
        with torch.no_grad():
            for layer in self.layers:
                nn.init.xavier_uniform_(layer.weight, generator=generator)
                if bias_init == "zeros":
                    layer.bias.zero_()
                else:
                    limit = (3.0 / layer.bias.numel()) ** 0.5
                    layer.bias.uniform_(-limit, limit, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x).squeeze(-1)

    @torch.no_grad()
    def nplm_loss_backward(
        self,
        points_by_feature: torch.Tensor,
        n_data: int,
        w_ref: torch.Tensor,
        offset_data: torch.Tensor,
        offset_ref: torch.Tensor,
        with_loss: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Set .grad of every parameter to dL/dparameter for the NPLM loss
        L = sum_R w (exp(f + o_R) - 1) - sum_D (f + o_D), on points of shape (d, n) whose first
        n_data columns are data events. Returns (L when with_loss else None, w exp(f + o_R)), the
        second being dL/do_R per reference event (dL/do_D = -1), for training the offsets' nuisances."""
        activations = [points_by_feature]
        for layer in self.layers[:-1]:
            activations.append(self.activation(torch.addmm(layer.bias[:, None], layer.weight, activations[-1])))
        output = self.layers[-1]
        f = torch.addmm(output.bias[:, None], output.weight, activations[-1])[0]
        scaled_exp = extended_likelihood_slope(f[n_data:] + offset_ref, w_ref)
        loss = extended_likelihood(f[:n_data] + offset_data, f[n_data:] + offset_ref, w_ref) if with_loss else None
        delta = torch.empty_like(f)
        delta[:n_data] = -1.0
        delta[n_data:] = scaled_exp
        delta = delta[None, :]
        for index in range(len(self.layers) - 1, -1, -1):
            layer, inputs = self.layers[index], activations[index]
            layer.weight.grad = delta @ inputs.T
            layer.bias.grad = delta.sum(dim=1)
            if index > 0:
                delta = layer.weight.T @ delta
                _multiply_by_derivative_(delta, self.activation_name, inputs)
        return loss, scaled_exp

    @property
    def n_parameters(self) -> int:
        """Trainable parameters (weights and biases): the papers' chi2 target dof."""
        return parameter_count([self.layers[0].in_features] + [layer.out_features for layer in self.layers])

    @torch.no_grad()
    def clip_weights_(self, clip: float) -> None:
        """Clip every weight matrix (not the biases) to [-clip, clip] in place."""
        for layer in self.layers:
            layer.weight.clamp_(-clip, clip)
