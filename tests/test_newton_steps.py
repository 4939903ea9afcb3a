"""The Newton loop's last step at tolerance: taken when J, as computed, rises by less than the
step's predicted decrease (rounding in J), refused when it rises by more."""

import pytest
import torch

from nplm_kernel.solver.newton import solve


class RoundedQuadratic:
    """One fit of J = (gamma - m)^2 / 2 - m^2 / 2 + c + (lambda / 2) gamma^2 (one coordinate, n = 1;
    m = `minimum`, c = `constant`, J(0) = c), Newton directions 0.999 of the exact ones, and a
    computed J that rises by `rise` times the true decrease instead of falling, on steps shorter
    than `rough_steps` (what float64 evaluation does to J near its minimum)."""

    kernel_cached = True

    def __init__(self, rise: float, minimum: float = 1.0, constant: float = 0.0, rough_steps: float = 1e-5):
        self.rise, self.minimum, self.constant, self.rough_steps = rise, minimum, constant, rough_steps
        self.gamma = torch.zeros((1, 1), dtype=torch.float64)
        self.loss = torch.full((1,), constant, dtype=torch.float64)
        self.loss_gradient = torch.full((1, 1), -minimum, dtype=torch.float64)
        self.n_points = torch.ones(1, dtype=torch.float64)

    def true_loss(self, gamma: torch.Tensor) -> torch.Tensor:
        return 0.5 * (gamma[:, 0] - self.minimum) ** 2 - 0.5 * self.minimum**2 + self.constant

    def refresh(self, toys):
        self.loss_gradient[toys] = self.gamma[toys] - self.minimum

    def directions(self, toys, gradient, penalty, max_cg, cg_tol):
        return 0.999 * gradient / (1.0 + penalty), torch.zeros(len(toys), dtype=torch.long)

    def prepare_steps(self, toys, steps, fresh_hessian):
        self.steps = steps

    def try_steps(self, toys, scales):
        self.trial = self.gamma[toys] - scales[:, None] * self.steps
        values = self.true_loss(self.trial)
        if float(self.steps.abs().max()) < self.rough_steps:
            current = self.true_loss(self.gamma[toys])
            values = current + self.rise * (current - values)
        return values

    def accept(self, toys):
        if len(toys):
            self.gamma[toys] = self.trial
            self.loss[toys] = self.true_loss(self.gamma[toys])


@pytest.mark.parametrize(("rise", "taken"), [(0.5, True), (3.0, False)])
def test_a_fit_at_tolerance_takes_its_last_step_through_rounding_in_j_but_not_a_real_rise(rise, taken):
    problem = RoundedQuadratic(rise)
    solution = solve(problem, [1e-12], newton_tol=1e-7)
    (report,) = solution.diagnostics
    assert report.converged and report.stop_reason == "converged"
    error = abs(float(solution.gamma[0, 0]) - 1.0 / (1.0 + 1e-12))
    if taken:  # Armijo's test alone would refuse this step and leave gamma 1e-6 from the minimum
        assert error < 1e-8
    else:
        assert 1e-7 < error < 1e-5


def test_the_last_step_never_takes_j_above_its_value_at_gamma_zero():
    """A fit at tolerance from its first step (J(0) = 1000 and a minimum 5e-7 below it) whose
    computed J rises within the allowance would end above J(0): the step is refused and gamma
    stays 0, where J = J(0) (t = 0 for an NPLM fit without offsets, never below)."""
    problem = RoundedQuadratic(0.5, minimum=1e-3, constant=1000.0, rough_steps=1.0)
    solution = solve(problem, [1e-12], newton_tol=1e-7)
    assert solution.diagnostics[0].converged
    assert float(solution.gamma[0, 0]) == 0.0 and float(problem.loss[0]) == 1000.0
