"""Compression steps that run on the torch model before export: BN fusion and re-parameterisation,
structured pruning, distillation / fine-tuning, low-rank factorisation and quantization-aware
training. Each step's output is a compressed checkpoint (``compressed_checkpoint``) that ``export`` loads."""
