"""The default study behind the README's main command: the reports' question, answered in about ten minutes.

Does a small custom CNN trained from scratch beat an ImageNet-pretrained network, and how does that depend on the
amount of data? The report-style CNN and `fast` from scratch, EfficientNet-Lite0 fine-tuned from ImageNet weights
(at the resolution chosen for the images, its last stage unfrozen), each with the same wall-clock budget on the
whole training set, plus learning curves on 1% and 10% of it. Sized for a 2-core laptop CPU on Fashion-MNIST (and
seconds on digits): the backbone's two one-off passes over 60,000 images take about two minutes there.
"""

DEFAULT_STUDY = {
    "data": "auto",
    "models": [
        {"simple-2conv": {"batch_size": 128}},
        "fast",
        {"efficientnet_lite0": {"unfreeze": "1"}},
    ],
    "fractions": [0.01, 0.1, 1.0],
    "budget_per_model": "150s",
    "lrs": [1e-4, 1e-3, 1e-2, 1e-1],
    "lr_epochs": 2,
    "lr_fraction": 0.1,
    "out": "studies/default",
}

# Sized for the built-in dataset: a study of the user's own data without --config compares the models on the whole
# training set, each with its recipe (or --budget); --fractions and --lrs add learning curves and the LR comparison
AUTO_DATA_ONLY = ("budget_per_model", "fractions", "lrs", "lr_epochs", "lr_fraction")
