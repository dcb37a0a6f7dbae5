"""(a) A plain PyTorch script: a small CNN on scikit-learn's digits, in one process.

    python examples/torch_digits_single.py

torch_digits_distributed.py is the same script made data-parallel the Horovod way; with
ringtrain the only change from a Horovod script is the import."""
import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load_data():
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # [n, 1, 8, 8]
    y = torch.tensor(digits.target)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def make_model():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),   # 16 x 4 x 4
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),  # 32 x 2 x 2
        torch.nn.Flatten(), torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return acc


def train(epochs=20, batch_size=32, lr=0.01, seed=0):
    torch.manual_seed(seed)
    x_train, x_test, y_train, y_test = load_data()
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x_train))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch:3d}/{epochs}  loss {total / len(order):.4f}  "
              f"held-out acc {accuracy(model, x_test, y_test):.4f}", flush=True)
    acc = accuracy(model, x_test, y_test)
    print(f"final held-out accuracy: {acc:.4f}", flush=True)
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train(args.epochs)
