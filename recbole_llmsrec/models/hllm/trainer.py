"""HLLM's trainer: its learning-rate schedule over RecBole's loop."""

import warnings

from transformers import get_cosine_schedule_with_warmup

from recbole_llmsrec.distribution.training import accumulation_steps
from recbole_llmsrec.training.schedule import epoch_parts, optimizer_steps_before
from recbole_llmsrec.training.trainer import Trainer


class HLLMTrainer(Trainer):
    """RecBole's Trainer with HLLM's schedule (spec 4): linear warm-up over ``warmup_ratio`` of all
    steps, then cosine decay to 0, stepped by an optimizer hook (RecBole's loop runs unchanged)
    after each optimizer step (one accumulation group); a resumed run continues the schedule."""

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        parts, accumulation = epoch_parts(self.config, train_data), accumulation_steps(self.config)
        total = optimizer_steps_before(self.epochs * parts, len(train_data), parts, accumulation)
        scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, int(self.config["warmup_ratio"] * total), total
        )
        # RecBole's start_epoch counts parts of epochs when validations_per_epoch cuts them
        # fast-forwarding a resumed schedule steps it before the optimizer
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            for _ in range(
                optimizer_steps_before(self.start_epoch, len(train_data), parts, accumulation)
            ):
                scheduler.step()
        self.scheduler = scheduler
        hook = self.optimizer.register_step_post_hook(lambda *_: scheduler.step())
        try:
            return super().fit(
                train_data,
                valid_data,
                verbose=verbose,
                saved=saved,
                show_progress=show_progress,
                callback_fn=callback_fn,
            )
        finally:
            hook.remove()
