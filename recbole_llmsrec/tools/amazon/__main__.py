"""``python -m recbole_llmsrec.tools.amazon``."""

from recbole_llmsrec.tools.amazon.cli import main

main()
