"""The trainer of every model run through the plugin (``trainer``) and its schedules
(``schedule``)."""
