"""The plugin's data: its sequential dataset and ``create_dataset`` (``dataset``), item texts from
RecBole's ``.item`` files (``item_text``) and the checks of atomic files (``atomic_files``)."""
