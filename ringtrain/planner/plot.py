"""`ringtrain plan --plot FILE.png`: the cost model's predictions against what was measured, one
point per timed collective, engine step and calibration step of the fit (and the validated
training step, if any), on log-log axes around the line predicted = measured with the ±25% band
the planner is held to. matplotlib is an optional extra: pip install "ringtrain[plot]"."""


def plot_predicted_vs_measured(network, path, validation=None):
    """Write the PNG to `path`; returns the path."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError('--plot needs matplotlib: pip install "ringtrain[plot]" (or matplotlib)') from None
    matplotlib.use("Agg")  # a file, never a window
    from matplotlib import pyplot

    groups = {}
    for what, _, measured, fitted in network.samples:
        kind = what.split(" of ")[0].split(" step")[0] if "step" in what else what
        groups.setdefault(kind, []).append((measured, fitted))
    if validation is not None:
        groups["training step (validated)"] = [(validation.measured_step, validation.predicted_step)]
    figure, axes = pyplot.subplots(figsize=(7, 6))
    values = [v for points in groups.values() for pair in points for v in pair if v > 0]
    low, high = min(values) / 1.5, max(values) * 1.5
    axes.plot([low, high], [low, high], color="black", linewidth=1, label="predicted = measured")
    axes.fill_between([low, high], [low * 0.8, high * 0.8], [low * 1.25, high * 1.25], color="grey", alpha=0.2,
                      label="within [0.8, 1.25]")
    for kind, points in groups.items():
        shown = [(m, f) for m, f in points if m > 0 and f > 0]  # log axes: a fitted 0 cannot be drawn
        if shown:
            axes.scatter([m for m, _ in shown], [f for _, f in shown], label=kind, s=28)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_xlabel("measured (s)")
    axes.set_ylabel("predicted by the cost model (s)")
    axes.set_title(f"ringtrain plan: {network.ranks} ranks, {network.ranks_per_host} per host")
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path
