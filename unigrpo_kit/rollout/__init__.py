"""Rollouts: the painter (hybrid ODE/SDE denoising) and the text-policy adapter."""
