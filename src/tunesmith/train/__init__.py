"""The one training loop (plain PyTorch + accelerate) and its parts."""
