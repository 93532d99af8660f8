"""This plugin's models; ``get_model(name)`` looks here before RecBole."""
