"""Reinforcement-learning agents shared by the studies (to come): env-agnostic, each shown to
learn on problems with known answers before a study relies on it."""
