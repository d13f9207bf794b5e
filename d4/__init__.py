"""Shared pieces of D4 Tiny CNN: the model and its input format (model.py), MNIST loading (data.py)."""
