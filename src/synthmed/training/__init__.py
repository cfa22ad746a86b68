"""Training the generators: configuration, the training loop and its FID stopping rule, and one
training method per kind of model (GANs, diffusion)."""
