"""The planner checked against the real thing: the step time a Plan predicts next to the step
measured on the same job (bench/plan.py, `ringtrain plan --validate`)."""
import dataclasses

from .advise import Plan
from .costs import Network, parameter_sizes
from .measure import CALIBRATIONS, calibrated, measure_network, time_training_steps


@dataclasses.dataclass(frozen=True)
class Validation:
    """A prediction next to the measured step it predicts, on the same job."""

    ranks: int
    one_rank_step: float      # measured: the step with no communication (the model's compute)
    predicted_step: float     # the Plan's step time on `ranks`, from that compute
    measured_step: float      # measured: the step on every rank
    network: Network

    @property
    def ratio(self):
        return self.predicted_step / self.measured_step

    def describe(self):
        return (f"validation on {self.ranks} ranks: one-rank step {self.one_rank_step * 1e3:.2f} ms (measured), "
                f"predicted {self.ranks}-rank step {self.predicted_step * 1e3:.2f} ms, measured "
                f"{self.measured_step * 1e3:.2f} ms: predicted/measured = {self.ratio:.2f}")


def validate(sizes, compute_seconds, rounds=3, steps=20):
    """Fit the model and time the real step it predicts, `rounds` times in turn on this job;
    return the round with the median predicted/measured ratio. Collective.

    The prediction takes the measured one-rank step as its compute time, as a user would take
    the step time of their single-process script: both sides then cover the same work."""
    from .. import runtime

    sizes = tuple(parameter_sizes(sizes))
    ranks = runtime.current("validate").size
    results = []
    for _ in range(rounds):
        network = measure_network(calibrate=False)
        # The calibration step and the predicted one take turns, so that both see the same load
        # on the machine. The prediction uses only the calibration's timings (and the fit).
        *calibration, (one, whole) = time_training_steps([*CALIBRATIONS, sizes], compute_seconds, steps=steps)
        network = calibrated(network, calibration)
        predicted = Plan(network, sizes, 4, one, 1, 0.75, ranks).step_seconds(ranks)
        results.append(Validation(ranks, one, predicted, whole, network))
    return sorted(results, key=lambda v: v.ratio)[len(results) // 2]
