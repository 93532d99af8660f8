"""Data pieces shared by the models: item text from RecBole's ``.item`` atomic files."""
