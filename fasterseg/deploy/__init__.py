"""Deployment: inference paths (TorchScript, bf16, int8, onnxruntime, OpenVINO) behind one
``Predictor`` interface, the per-machine ``--auto`` choice, and calibration on real images."""
