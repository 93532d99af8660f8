"""Several processes, on one machine or many: the process group (``process_group``), wrapping a
model (``wrapping``), the training loop (``training``) and putting results together
(``gathering``)."""
