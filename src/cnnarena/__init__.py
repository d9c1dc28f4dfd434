"""cnnarena: custom CNN from scratch vs ImageNet-pretrained fine-tuning, measured honestly."""

__version__ = "0.1.0"
