"""RecBole's ``run_recbole.py`` for this plugin: ``python run_recbole.py --model=SASRec
--dataset=ml-100k``.

Flags: --model/-m, --dataset/-d, --config_files (space-separated), --checkpoint (resume), and any
--key=value config override. The same CLI is installed as ``recbole-llmsrec`` and ``python -m
recbole_llmsrec``.
"""

from recbole_llmsrec.quick_start import main

if __name__ == "__main__":
    main()
