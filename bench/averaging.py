"""Per-step gradient averaging (DistributedOptimizer) against periodic model averaging
(ModelAveraging, tau local steps per average) on the digits MLP, 2 ranks, over an emulated slow
link, side by side in one run.

    python bench/averaging.py [--tau 8] [--epochs 3] [--repeats 3]

The slow link is EMULATED: this host's ranks talk through shared memory, and traffic control
(netem) is not available on this kernel. Every exchange (one fused allreduce: the gradients in
one arm, the parameters in the other; the same number of bytes, 9,610 float32) is followed on
every rank by a sleep of latency + bytes / bandwidth, the time such a link would add. Both arms
pay the same price per exchange; they differ only in how many exchanges an epoch needs. The
emulation lives here, in the benchmark; nothing in ringtrain's data path sleeps.
Also prints each arm's held-out accuracy after 30 epochs (no delay: the link changes the time,
not the arithmetic)."""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from common import ensure_mpi, machine_line, print_table  # noqa: E402

LINKS = [("none (shared memory)", 0.0, float("inf")), ("LAN: 0.5 ms, 1 Gbit/s", 0.5e-3, 125e6),
         ("WAN: 10 ms, 100 Mbit/s", 10e-3, 12.5e6)]


class Arm:
    """One way of training: per-step gradient averaging, or model averaging every tau steps."""

    def __init__(self, tau, data, lr=0.05, seed=0):
        import numpy as np

        import ringtrain as rt
        from digits_model import MLP
        from ringtrain.train.optimizers import SGD

        self.tau, (self.x, self.y) = tau, data
        self.model = MLP(seed)
        rt.broadcast_parameters(self.model.params)
        sgd = SGD(self.model.params, lr=lr, momentum=0.9)
        self.opt = rt.ModelAveraging(sgd, period=tau) if tau else rt.DistributedOptimizer(sgd)
        self.rng = np.random.default_rng(seed + rt.rank())
        self.exchange_bytes = sum(p.nbytes for p in self.model.params)

    def epoch(self, link_latency, link_bandwidth, batch_size=32):
        """One pass over this rank's shard; sleeps the emulated link time after each exchange."""
        from digits_model import softmax_cross_entropy

        link_seconds = link_latency + self.exchange_bytes / link_bandwidth
        order = self.rng.permutation(len(self.x))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            _, d_logits = softmax_cross_entropy(self.model.logits(self.x[batch]), self.y[batch])
            self.model.backward(d_logits, on_grad=self.opt.grad_ready)
            if self.opt.step() and link_seconds:  # True: this step exchanged over the link
                time.sleep(link_seconds)
        if self.tau:
            before = self.opt.averages
            self.opt.synchronize()  # end of epoch: every rank holds the averaged model
            if self.opt.averages > before and link_seconds:
                time.sleep(link_seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tau", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--accuracy-epochs", type=int, default=30)
    args = parser.parse_args()
    ensure_mpi(2)

    import ringtrain as rt
    from digits_model import accuracy, load_data

    rt.init()
    x_train, x_test, y_train, y_test = load_data()
    data = rt.shard(x_train, y_train, seed=0)
    say = print if rt.rank() == 0 else (lambda *a, **k: None)
    say(f"# {machine_line()}; {rt.size()} ranks; digits MLP, batch 32 per rank; tau={args.tau}; "
        f"emulated link (sleep per exchange); shared machine", flush=True)

    arms = {"per-step": Arm(0, data), f"tau={args.tau}": Arm(args.tau, data)}
    for arm in arms.values():  # warm up: first negotiations, response cache, buffers
        arm.epoch(0.0, float("inf"))
    rows = []
    for link, latency, bandwidth in LINKS:
        say(f"# link {link}: {args.repeats} x {args.epochs} epochs per arm, alternating ...", flush=True)
        samples = {name: [] for name in arms}
        for _ in range(args.repeats):
            for name, arm in arms.items():
                rt.barrier()
                started = time.perf_counter()
                for _ in range(args.epochs):
                    arm.epoch(latency, bandwidth)
                rt.barrier()
                samples[name].append((time.perf_counter() - started) / args.epochs)
        per_step, averaged = (statistics.median(samples[name]) for name in arms)
        rows.append([link, f"{per_step * 1e3:.1f}", f"{averaged * 1e3:.1f}", f"{per_step / averaged:.1f}x"])

    accuracies = []
    for tau in (0, args.tau):
        say(f"# accuracy: {'per-step' if not tau else f'tau={tau}'}, {args.accuracy_epochs} epochs ...", flush=True)
        arm = Arm(tau, data)
        for _ in range(args.accuracy_epochs):
            arm.epoch(0.0, float("inf"))
        accuracies.append(accuracy(arm.model, x_test, y_test))
    if rt.rank() == 0:
        print_table(["link (emulated)", "per-step ms/epoch", f"tau={args.tau} ms/epoch", "speedup"], rows)
        print(f"held-out accuracy after {args.accuracy_epochs} epochs: per-step {accuracies[0]:.4f}, "
              f"tau={args.tau} {accuracies[1]:.4f}", flush=True)
    rt.shutdown()


if __name__ == "__main__":
    main()
