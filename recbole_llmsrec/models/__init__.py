"""This plugin's models, one folder each (model, dataset, trainer, settings, YAML of defaults).

Nothing is imported here: ``recbole_llmsrec.registry`` names every model's classes and loads a
model's folder only when that model is asked for.
"""
