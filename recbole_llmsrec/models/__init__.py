"""This plugin's models, one folder each (model, dataset, settings, YAML of defaults, and a trainer
where the model trains its own way).

Nothing is imported here: ``recbole_llmsrec.registry`` names every model's classes and loads a
model's folder only when that model is asked for.
"""
