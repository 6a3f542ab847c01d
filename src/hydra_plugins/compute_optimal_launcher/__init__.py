"""Hydra launchers of this project (Hydra loads launcher plugins only from the hydra_plugins package)."""
