"""Training on top of the public collectives: the distributed optimizer and the optimizers it
wraps (with their numba kernels), gradient compression, sparse gradients, model averaging, model
parallel layers, parameter and optimizer-state sync, data sharding, checkpoints and elastic
recovery."""
