"""Registered in unigrpo_kit.registry; the integrator lists the modules here."""
