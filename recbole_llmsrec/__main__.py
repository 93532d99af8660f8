"""``python -m recbole_llmsrec --model=... --dataset=... [--config_files=...] [--key=value
...]``."""

from recbole_llmsrec.quick_start import main

main()
