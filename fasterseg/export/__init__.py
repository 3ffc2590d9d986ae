"""Deployment exports (ONNX)."""
