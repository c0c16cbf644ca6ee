"""A spurious correlation, caught by saliency and feature reliance.

Digits are 8x8 images; the top-left pixel is blank in every one of them. Here it is
"planted": in the training data its value encodes the label (one of ten levels, one
per class, like a watermark that happens to agree with the class). A network learns
this shortcut alongside the real strokes. On test images whose planted pixel does
*not* agree with the label (the shortcut breaks, as it would in deployment),
accuracy drops, and both tools point at the culprit before deployment, using only
data where the shortcut still holds:

* saliency: the mean |integrated gradients| over held-out images ranks the planted
  pixel first of 64 (gradient x input agrees);
* feature reliance: shuffling the planted pixel costs more accuracy than shuffling
  any other pixel (permutation importance, 5 repeats).

Run:  python examples/spurious_digits.py [--out DIR]   (DIR: PNG saliency maps)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn
from fastnn import explain

PLANTED = 0  # pixel [0, 0], blank in every digit
LEVEL = 4.0  # the planted values span +-4 (the data is standardized)


def plant(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A copy of X whose planted pixel encodes ``labels`` (class c -> one level)."""
    out = X.copy()
    out[:, PLANTED] = LEVEL * (labels - 4.5) / 4.5
    return out


def rank_of(scores: np.ndarray, j: int) -> int:
    return int(np.flatnonzero(explain.rank_features(scores) == j)[0]) + 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write PNG saliency maps to this folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    X_train, X_test, y_train, y_test = fastnn.load_digits_split()
    assert np.all(X_train[:, PLANTED] == 0), "the planted pixel must start blank"
    X_train_sp = plant(X_train, y_train)  # the shortcut holds in training...
    X_test_iid = plant(X_test, y_test)  # ...and on held-out data like it
    wrong = (y_test + rng.integers(1, 10, size=y_test.shape)) % 10
    X_test_shift = plant(X_test, wrong)  # ...but not after the shift

    model = fastnn.MLP((64, 64, 10))
    model.fit(X_train_sp, y_train, epochs=30, seed=args.seed, verbose=0)
    clean = fastnn.MLP((64, 64, 10))
    clean.fit(X_train, y_train, epochs=30, seed=args.seed, verbose=0)
    acc_iid = model.score(X_test_iid, y_test)
    acc_shift = model.score(X_test_shift, y_test)

    # Insight, from data where the shortcut still holds (as before deployment).
    ig = explain.integrated_gradients(model, X_test_iid, n_steps=64)
    gxi = explain.gradient_x_input(model, X_test_iid, "predicted")
    saliency = np.abs(ig).mean(axis=0)
    saliency_gxi = np.abs(gxi).mean(axis=0)
    names = [f"pixel[{r},{c}]" for r in range(8) for c in range(8)]
    reliance = explain.feature_reliance(
        model,
        X_test_iid,
        y_test,
        n_repeats=5,
        random_state=args.seed,
        feature_names=names,
    )
    runner_up = reliance.ranking[1]

    print(f"planted pixel {names[PLANTED]}: encodes the label in training")
    print(f"accuracy, planted pixel agrees with the label:    {acc_iid:.3f}")
    print(f"accuracy, planted pixel disagrees (shifted test): {acc_shift:.3f}")
    print(
        f"accuracy drop:                                    {acc_iid - acc_shift:.3f}"
    )
    print(
        f"(same network trained without the planted pixel:  "
        f"{clean.score(X_test, y_test):.3f})"
    )
    print("rank of the planted pixel among 64 pixels (1 = most important):")
    print(
        f"  saliency, mean |integrated gradients|:  rank {rank_of(saliency, PLANTED)}"
        f"  ({saliency[PLANTED] / np.sort(saliency)[-2]:.1f}x the next pixel)"
    )
    print(
        f"  saliency, mean |gradient x input|:      rank "
        f"{rank_of(saliency_gxi, PLANTED)}"
    )
    print(
        f"  feature reliance (permutation, 5x):     rank "
        f"{reliance.rank_of(PLANTED)}  (accuracy drop "
        f"{reliance.importances_mean[PLANTED]:.3f} ± "
        f"{reliance.importances_std[PLANTED]:.3f}; next: {names[runner_up]} "
        f"{reliance.importances_mean[runner_up]:.3f})"
    )
    if args.out:
        from pathlib import Path

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        explain.saliency_map(
            saliency,
            out / "spurious_saliency_mean.png",
            image_shape=(8, 8),
            title="Planted pixel [0,0] stands out",
            label="mean |integrated gradients|",
        )
        explain.saliency_map(
            ig[0],
            out / "spurious_saliency_row0.png",
            image_shape=(8, 8),
            image=X_test_iid[0],
            title=f"Test row 0 (label {y_test[0]})",
            label="integrated gradients",
        )
        print(f"wrote saliency maps to {out}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
