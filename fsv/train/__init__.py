"""The one training path: a Ray Train `TorchTrainer` whose workers train under a DeepSpeed engine."""
