"""The default study behind the README's main command: the reports' question, answered in minutes.

Budgets are sized for a 2-core laptop CPU on Fashion-MNIST (and are seconds on digits):
the report-style CNN and `fast` from scratch, EfficientNet-Lite0 fine-tuned from ImageNet weights.
"""

DEFAULT_STUDY = {
    "data": "auto",
    "models": [
        {"simple-2conv": {"epochs": 3, "batch_size": 128}},
        {"fast": {"epochs": 4}},
        {"efficientnet_lite0": {"input_size": 32, "freeze_epochs": 2, "epochs": 1, "unfreeze": "1",
                                "fraction": 1.0}},
    ],
    "lrs": [1e-4, 1e-3, 1e-2, 1e-1],
    "lr_epochs": 2,
    "lr_fraction": 0.25,
    "out": "studies/default",
}
