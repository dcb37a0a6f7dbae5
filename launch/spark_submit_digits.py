"""A Spark job that trains the digits MLP from a DataFrame with ringtrain (InputMode.SPARK in
TensorFlowOnSpark's terms: each rank reads its own partitions, streamed from its task).

    spark-submit --master 'local[2]' launch/spark_submit_digits.py [--num-proc 2]

(With the venv's spark-submit, e.g. .venv/bin/spark-submit; PYSPARK_PYTHON is set to this
Python if it is not set already.)"""
import argparse
import os
import sys

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import numpy as np  # noqa: E402


def train(epochs=30, batch_size=32, lr=0.05):
    """Runs on every rank: read this rank's rows, train data-parallel, return held-out accuracy."""
    import ringtrain as rt
    import ringtrain.spark

    features, labels = [], []
    for batch in ringtrain.spark.partition():
        features.append(batch["features"].astype(np.float32))
        labels.append(batch["label"])
    x, y = np.concatenate(features), np.concatenate(labels)
    # Partitions differ by a few rows: every rank takes as many steps as the smallest share allows.
    steps = int(rt.allreduce(np.array([len(x) // batch_size]), op=rt.Min)[0])
    rng = np.random.default_rng(1)
    params = [rng.normal(0, np.sqrt(2 / 64), (64, 128)).astype(np.float32), np.zeros(128, np.float32),
              rng.normal(0, np.sqrt(2 / 128), (128, 10)).astype(np.float32), np.zeros(10, np.float32)]
    rt.broadcast_parameters(params)
    opt = rt.DistributedOptimizer(rt.optim.SGD(params, lr=lr, momentum=0.9))
    order_rng = np.random.default_rng(rt.rank())
    for epoch in range(epochs):
        order = order_rng.permutation(len(x))
        for s in range(steps):
            b = order[s * batch_size:(s + 1) * batch_size]
            h = np.maximum(x[b] @ params[0] + params[1], 0)
            logits = h @ params[2] + params[3]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(b)), y[b]] -= 1
            d = p / len(b)
            dh = (d @ params[2].T) * (h > 0)
            opt.step([x[b].T @ dh, dh.sum(0), h.T @ d, d.sum(0)])
        if rt.rank() == 0 and (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}/{epochs}: {steps} steps per rank", flush=True)
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, x_test, _, y_test = train_test_split((digits.data / 16).astype(np.float32), digits.target, test_size=0.25,
                                            random_state=0, stratify=digits.target)
    h = np.maximum(x_test @ params[0] + params[1], 0)
    return float(((h @ params[2] + params[3]).argmax(1) == y_test).mean())


def digits_dataframe(spark):
    """The training split of scikit-learn's bundled digits as a DataFrame (features, label)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, _, y_train, _ = train_test_split((digits.data / 16).astype(np.float32), digits.target, test_size=0.25,
                                              random_state=0, stratify=digits.target)
    rows = [(row.tolist(), int(label)) for row, label in zip(x_train, y_train)]
    return spark.createDataFrame(rows, "features array<float>, label int")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-proc", type=int, default=None)
    args = parser.parse_args()
    from pyspark.sql import SparkSession

    import ringtrain.spark

    spark = SparkSession.builder.appName("ringtrain-digits").getOrCreate()
    accuracies = ringtrain.spark.run(train, df=digits_dataframe(spark), num_proc=args.num_proc)
    print(f"held-out accuracy on every rank: {accuracies}")
    print(f"final held-out accuracy: {accuracies[0]:.4f}")
    spark.stop()


if __name__ == "__main__":
    main()
