"""RecBole's ``run_recbole_group.py`` for this plugin: every model of the list on the same split.

    python run_recbole_group.py --model_list=SASRec,HLLM --dataset=ml-100k --config_files="a.yaml
    b.yaml"

Flags: --model_list/-m, --dataset/-d, --config_files, --valid_latex, --test_latex (RecBole's LaTeX
tables) and any --key=value config override; a Markdown table of the test results is printed.
Installed as ``recbole-llmsrec-group`` too.
"""

from recbole_llmsrec.group import group_main

if __name__ == "__main__":
    group_main()
