"""RecBole 1.2.1's ``AbstractTrainer.__init__`` wraps every model in DDP when several processes run,
with ``device_ids=[local_rank]`` (CUDA only: no CPU run), the whole model (frozen LLMs included, so
their weights are broadcast and bucketed) and SyncBatchNorm. Its ``__init__`` here only stores the
config and the model; the plugin's trainer wraps what trains at the first training step
(``distribution.wrapping.wrap_ddp``). Targets RecBole 1.2.1; tested in
``tests/test_recbole_fixes.py`` and by the 2-process runs of ``tests/test_distributed.py``.
"""

from recbole.trainer.trainer import AbstractTrainer


def _init_without_ddp(self, config, model):
    self.config, self.model = config, model


def install():
    AbstractTrainer.__init__ = _init_without_ddp
