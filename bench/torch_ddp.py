"""Training throughput of a small CNN on 2 ranks: ringtrain.torch.DistributedOptimizer against
torch's DistributedDataParallel over gloo, in the same processes, same model, batch and steps,
interleaved (DDP, ringtrain, DDP, ringtrain, ...) so a slow stretch of a shared machine lands
on both.

    python bench/torch_ddp.py [--steps 30] [--repeats 5] [--batch-size 32]

The model is PyTorch's MNIST example CNN (1.2 M parameters, 28x28 inputs, synthetic data).
Each rank uses one torch thread, so 2 ranks use the machine's 2 cores."""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import ensure_mpi, machine_line, print_table  # noqa: E402


def make_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(9216, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    ensure_mpi(2)

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    import ringtrain.torch as hvd

    torch.set_num_threads(1)
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    port = hvd.broadcast_object(29500 + os.getpid() % 1000 if rank == 0 else None, root_rank=0)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)

    g = torch.Generator().manual_seed(rank)
    data = [(torch.randn(args.batch_size, 1, 28, 28, generator=g), torch.randint(0, 10, (args.batch_size,), generator=g))
            for _ in range(8)]

    ddp_model = torch.nn.parallel.DistributedDataParallel(make_model())
    ddp_opt = torch.optim.SGD(ddp_model.parameters(), lr=0.01, momentum=0.9)
    rt_model = make_model()
    rt_opt = hvd.DistributedOptimizer(torch.optim.SGD(rt_model.parameters(), lr=0.01, momentum=0.9),
                                      named_parameters=rt_model.named_parameters())
    hvd.broadcast_parameters(rt_model.state_dict(), root_rank=0)

    def run(model, opt, steps):
        for i in range(steps):
            x, y = data[i % len(data)]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    contenders = {"torch DDP (gloo)": (ddp_model, ddp_opt), "ringtrain.torch DistributedOptimizer": (rt_model, rt_opt)}
    for model, opt in contenders.values():  # warm up both
        run(model, opt, 3)
    rates = {name: [] for name in contenders}
    for repeat in range(args.repeats):
        for name, (model, opt) in contenders.items():
            hvd.barrier()
            started = time.perf_counter()
            run(model, opt, args.steps)
            hvd.barrier()
            rates[name].append(args.steps * args.batch_size * size / (time.perf_counter() - started))
        if rank == 0:
            print(f"# repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{n} {r[-1]:.0f} samples/s"
                                                                      for n, r in rates.items()), flush=True)
    if rank == 0:
        params = sum(p.numel() for p in rt_model.parameters())
        print(f"# {machine_line()}; {size} ranks, batch {args.batch_size}/rank, {params / 1e6:.2f} M parameters, "
              f"{args.steps} steps x {args.repeats} interleaved repeats (median)")
        ddp = rates["torch DDP (gloo)"]
        rows = []
        for name, r in rates.items():
            # each repeat's ratio pairs two back-to-back runs, so machine-load swings cancel
            paired = sorted(mine / theirs for mine, theirs in zip(r, ddp))
            rows.append((name, f"{statistics.median(r):.0f}", f"{statistics.median(paired):.2f}x",
                         f"{paired[0]:.2f}x .. {paired[-1]:.2f}x"))
        print_table(["training", "samples/s (median)", "ratio vs DDP (median of paired)", "range"], rows)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
