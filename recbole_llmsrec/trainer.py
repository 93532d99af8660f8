"""Trainers of this plugin's models. ``get_trainer`` looks here for ``<Model>Trainer`` first."""
