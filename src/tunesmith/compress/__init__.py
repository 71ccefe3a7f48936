"""Making a finished run's model cheaper to run: export to ONNX (more methods to come:
quantisation, pruning, distillation)."""
