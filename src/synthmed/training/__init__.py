"""GAN training: configuration, the training loop and its FID stopping rule."""
