"""A-LLMRec's stage 1 (spec ``allmrec.md`` §2): an item auto-encoder on the frozen teacher's item
embeddings aligned with a text auto-encoder on a fine-tuned Sentence-BERT embedding of each item's
text. Only the item encoder is kept afterwards; the text side is dropped when the stage ends."""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_llmsrec.llm.loading import load_llm, mean_pooled


def alignment_loss(
    user,
    item_emb,
    item_latent,
    item_recon,
    text_emb,
    text_latent,
    text_recon,
    item_weight=0.5,
    text_weight=0.2,
):
    """Stage-1 loss L_rec + L_match + item_weight * L_item + text_weight * L_text (spec section 2).
    Item and text tensors are ``[2, B, dim]`` (0: positive, 1: negative). L_rec uses the DECODED
    item embedding and a mean (not sum) over dimensions, as the original."""
    logits = (user.unsqueeze(0) * item_recon).mean(-1)
    rec = F.binary_cross_entropy_with_logits(
        logits[0], torch.ones_like(logits[0])
    ) + F.binary_cross_entropy_with_logits(logits[1], torch.zeros_like(logits[1]))
    match = F.mse_loss(item_latent[0], text_latent[0]) + F.mse_loss(item_latent[1], text_latent[1])
    item = F.mse_loss(item_recon[0], item_emb[0]) + F.mse_loss(item_recon[1], item_emb[1])
    text = F.mse_loss(text_recon[0], text_emb[0].detach()) + F.mse_loss(
        text_recon[1], text_emb[1].detach()
    )
    return rec + match + item_weight * item + text_weight * text


class AutoEncoder(nn.Module):
    """``encoder``: Linear(d, latent) + sigmoid (the aligned latent); ``decoder``: Linear(latent,
    d)."""

    def __init__(self, size, latent_size):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(size, latent_size), nn.Sigmoid())
        self.decoder = nn.Linear(latent_size, size)

    def forward(self, x):
        latent = self.encoder(x)
        return latent, self.decoder(latent)


class AlignmentStage:
    """Stage 1 of ``ALLMRec`` (a mixin: it reads the model's teacher, texts and ``stage_done``)."""

    def prepare_stage1(self):
        """Load the Sentence-BERT encoder (fine-tuned in stage 1) and the text auto-encoder."""
        config = self.config
        encoder, self.text_tokenizer = load_llm(
            config["text_encoder_path"],
            kind="base",
            dtype=config["text_encoder_dtype"],
            trust_remote_code=bool(config["trust_remote_code"]),
            key="text_encoder_path",
        )
        self.text_encoder = encoder.to(self._device())
        self.text_autoencoder = AutoEncoder(
            encoder.config.hidden_size, config["alignment_size"]
        ).to(self._device())

    def stage1_modules(self):
        """What stage 1 trains, as one module (the model's own submodules, not copies): what DDP
        wraps in a distributed run."""
        return nn.ModuleDict(
            {
                "item_autoencoder": self.item_autoencoder,
                "text_encoder": self.text_encoder,
                "text_autoencoder": self.text_autoencoder,
            }
        )

    def stage1_parameters(self):
        return list(self.stage1_modules().parameters())

    def stage1_loss(self, interaction):
        users, target = interaction[self.USER_ID], interaction[self.POS_ITEM_ID]
        negative = self.sample_negatives(users, 1)[:, 0].to(target.device)
        items = torch.stack([target, negative])  # [2, B]
        with torch.no_grad():
            user = self.teacher_users(interaction)
            item_emb = self.cf_model.item_embedding(items)
        item_latent, item_recon = self.item_autoencoder(item_emb)
        texts = [self.texts[i] for i in items.flatten().tolist()]
        text_emb = (
            mean_pooled(
                self.text_encoder,
                self.text_tokenizer,
                texts,
                self.config["text_encoder_max_length"],
            )
            .float()
            .view(2, len(users), -1)
        )
        text_latent, text_recon = self.text_autoencoder(text_emb)
        return alignment_loss(
            user,
            item_emb,
            item_latent,
            item_recon,
            text_emb,
            text_latent,
            text_recon,
            self.config["stage1_item_weight"],
            self.config["stage1_text_weight"],
        )

    def finish_stage1(self):
        """Freeze the item encoder and drop the text side (only the item encoder is used later)."""
        self.text_encoder = self.text_tokenizer = self.text_autoencoder = None
        self.stage_done[1] = True
        self._freeze_finished_stages()

    def stage1_state_dict(self):
        return {
            "cf_model": self.cf_model.state_dict(),
            "item_autoencoder": self.item_autoencoder.state_dict(),
        }

    def load_stage1_state_dict(self, state):
        self.cf_model.load_state_dict(state["cf_model"])
        self.item_autoencoder.load_state_dict(state["item_autoencoder"])
        self.stage_done.fill_(True)
        self._freeze_finished_stages()

    def stage1_scores(self, interaction):
        """The stage-1 head: ``mean_d(u * decoder(encoder(e_i)))`` for every item, ``[B,
        n_items]``."""
        user = self.teacher_users(interaction)
        _, decoded = self.item_autoencoder(self.cf_model.item_embedding.weight[: self.n_items])
        return user @ decoded.T / decoded.shape[-1]
