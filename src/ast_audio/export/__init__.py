"""Deployment: ONNX graphs of an AST (with or without the front end inside) and ONNX Runtime as a backend."""
