"""WAVER (ICASSP 2024) on cached CLIP features: tag injection, seqTransf, WTI, distillation.

Video: the video's open-vocabulary tags (phrase embeddings from the store's tags step)
are injected into the frames by attention from frames to the top ``tag_k`` tags, a
pre-norm temporal transformer ("seqTransf", padding masked) runs over the frames, and
weighted token-wise interaction (WTI, DRL's "arch 2") scores every caption token against
every frame. ``distill`` picks how the frozen teacher's knowledge reaches the student:

* ``injection``: the release's form; tags are inputs, so they are needed at test time
  (the store holds them for every video);
* ``kd``: the paper's form; a loss pulls the student's caption-to-video distribution
  towards the teacher's caption-to-tag distribution (KL at ``kd_temperature``, weight
  ``kd_beta``); tags are read by the loss only, the student is scored without them;
* ``none``: the plain student (DRL's WTI + seqTransf), the baseline of both.

Our fixes to the release (../shared/reference/waver.md): with K > 1 tags the frames
attend to the tags (a softmax with -inf masks, not multiplicative masks); ``tag_k`` is
wired; the release's LayerNorms replace the CLIP frames, we keep them on a residual path
and let the injected block enter through a zero-initialised projection, so the untrained
head starts from CLIP's frame geometry; videos without tags get no injection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from storage.schema import StoreLayout
from training.heads.base import Head, register_head
from training.heads.layers import layer_norm, mlp
from training.losses import info_nce

DISTILL = ("injection", "kd", "none")


@dataclass
class WaverConfig:
    dim: int = StoreLayout.dim  # the default store's (CLIP's embed_dim); a store's own fills it
    max_frames: int = StoreLayout.n_frames
    n_heads: int = 8
    mlp_ratio: int = 4
    temporal_layers: int = 4
    distill: str = "injection"  # injection | kd | none
    # tags the student attends to, and averaged into the teacher's video embedding (the
    # release used the top one); these two and kd_temperature were chosen on val by
    # `vtr sweep` on a planted store (README, "Sweeps")
    tag_k: int = 4
    teacher_k: int = 4
    kd_beta: float = 1.0
    # on logits that carry the logit scale (100)
    kd_temperature: float = 1.0
    dropout: float = 0.1
    # a linear map on the caption tokens, identity at start: the cached stand-in for
    # fine-tuning CLIP's text tower (the seeds do; our text features are frozen)
    text_adapter: bool = True
    wti_hidden: int = 0  # width of the token-weight MLPs (0: dim, DRL's transformer width)
    # DRL's channel decorrelation (cdcr=3); DRL's WTI recipe: lambda 0.001; 0 is off
    drl_lambda: float = 0.0
    drl_alpha1: float = 0.14  # weight of the diagonal terms (DRL's WTI recipe)
    drl_alpha2: float = 0.0  # weight of the off-diagonal terms (DRL's WTI recipe)
    logit_scale: float = 100.0

    def __post_init__(self):
        if self.distill not in DISTILL:
            raise ValueError(f"distill must be one of {', '.join(DISTILL)}, not {self.distill!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.tag_k < 1 or self.teacher_k < 1:
            raise ValueError(f"tag_k and teacher_k must be >= 1 (got {self.tag_k}, {self.teacher_k})")
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}")


# --- building blocks --------------------------------------------------------------------
class TagInjection(nn.Module):
    """Frames attend to their tags; H = LN1(F + Drop(attn)); F' = LN2(H + Drop(FFN(H)));
    out = F + W_r F' with W_r zero at start. With one tag the attention is the release's
    W_d g."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))  # 512 -> 512
        self.drop = nn.Dropout(dropout)
        self.residual = nn.Linear(dim, dim)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)

    def forward(self, f: torch.Tensor, tags: torch.Tensor, tag_mask: torch.Tensor) -> torch.Tensor:
        has = tag_mask.any(dim=1)
        keys_off = ~tag_mask
        keys_off[:, 0] &= has  # a video without tags keeps one key (softmax stays finite), then drops it all
        g = self.attn(f, tags, tags, key_padding_mask=keys_off, need_weights=False)[0]
        h = self.ln1(f + self.drop(g))
        h = self.ln2(h + self.drop(self.ffn(h)))
        return f + has.to(f.dtype)[:, None, None] * self.residual(h)


class TemporalLayer(nn.Module):
    """Pre-norm transformer layer (CLIP's): QuickGELU MLP, padded frames masked as keys."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1, self.ln2 = layer_norm(dim), layer_norm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.mlp = mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where ``mask`` is True; exactly 0 elsewhere."""
    return torch.softmax(logits.float().masked_fill(~mask, float("-inf")), dim=-1)


def token_weight_mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def wti_scores(t_hat: torch.Tensor, t_mask: torch.Tensor, w_t: torch.Tensor,
               v_hat: torch.Tensor, v_mask: torch.Tensor, w_v: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Weighted token-wise interaction, [n_text, n_video] (no logit scale):
    1/2 [sum_i w_t,i max_j s_ij + sum_j w_v,j max_i s_ij] over valid tokens i and frames j.

    Masked entries are -inf before each max and their weight is exactly 0, and their
    max is replaced by 0 before weighting, so padding never changes a score. Text rows
    go in chunks: the [chunk, n_video, words, frames] block is the peak memory.
    """
    out = []
    for a in range(0, t_hat.shape[0], chunk):
        tm = t_mask[a:a + chunk]
        s = torch.einsum("awd,bnd->abwn", t_hat[a:a + chunk], v_hat).float()
        valid = tm[:, None, :, None] & v_mask[None, :, None, :]
        s = s.masked_fill(~valid, float("-inf"))
        t2v = s.max(dim=3).values  # [a, b, w]: best frame per word
        t2v = torch.where(tm[:, None, :], t2v, torch.zeros_like(t2v))
        v2t = s.max(dim=2).values  # [a, b, n]: best word per frame
        v2t = torch.where(v_mask[None], v2t, torch.zeros_like(v2t))
        out.append(((t2v * w_t[a:a + chunk, None, :]).sum(-1) + (v2t * w_v[None]).sum(-1)) / 2)
    return torch.cat(out)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    # DRL divides by the std itself; the floor only keeps a constant channel finite
    return (x - x.mean(0)) / x.std(0).clamp(min=1e-6)


def decorrelation_loss(t_hat: torch.Tensor, t_mask: torch.Tensor, w_t: torch.Tensor,
                       v_hat: torch.Tensor, v_mask: torch.Tensor, w_v: torch.Tensor,
                       alpha1: float, alpha2: float) -> torch.Tensor:
    """DRL's channel decorrelation regulariser (its ``cdcr=3``) over matching pairs.

    Row i of the text inputs [B, W, D] belongs to row i of the video inputs [B, N, D]
    (normalised tokens and frames, their masks and WTI weights). Every valid caption
    token is paired with its best-matching frame of its own video, and every valid frame
    with its best-matching token; the channel cross-correlation of each set of pairs
    (standardised over the pairs, each pair weighted by its token's or frame's WTI
    weight, divided by B) is averaged into C, and the loss is
    alpha1 * sum_c (C_cc - 1)^2 + alpha2 * sum_{c != d} C_cd^2.
    """
    b = t_hat.shape[0]
    t_hat, v_hat = t_hat.float(), v_hat.float()
    s = torch.einsum("bwd,bnd->bwn", t_hat, v_hat)
    s = s.masked_fill(~(t_mask[:, :, None] & v_mask[:, None, :]), float("-inf"))
    rows = torch.arange(b, device=s.device)[:, None]
    best_v = v_hat[rows, s.argmax(dim=2)]  # [B, W, D]: each token's best frame
    best_t = t_hat[rows, s.argmax(dim=1)]  # [B, N, D]: each frame's best token
    if int(t_mask.sum()) < 2 or int(v_mask.sum()) < 2:  # no spread to standardise by
        return s.new_zeros(())

    def cross(a, a_best, mask, w):
        a, a_best = _standardise(a[mask]), _standardise(a_best[mask])
        return torch.einsum("kc,kd,k->cd", a, a_best, w[mask].float()) / b

    c = (cross(t_hat, best_v, t_mask, w_t) + cross(v_hat, best_t, v_mask, w_v)) / 2
    diag = torch.diagonal(c)
    on = (diag - 1).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return alpha1 * on + alpha2 * off


def teacher_embedding(tags: torch.Tensor, tag_mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen teacher's view of each video: the normalised mean of its top ``k``
    normalised tag embeddings, and whether it has any tag."""
    m = tag_mask[:, :k]
    g = (F.normalize(tags[:, :k].float(), dim=-1) * m[..., None]).sum(1)
    return F.normalize(g, dim=-1), m.any(dim=1)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T)), both over
    the columns (videos) in ``valid`` only; 0 when fewer than two are valid."""
    if int(valid.sum()) < 2:
        return student.sum() * 0.0
    s = student.float()[:, valid] / temperature
    t = teacher.float()[:, valid] / temperature
    p = torch.softmax(t, dim=-1)
    kl = (p * (torch.log_softmax(t, dim=-1) - torch.log_softmax(s, dim=-1))).sum(-1)
    return temperature ** 2 * kl.mean()


# --- the head ---------------------------------------------------------------------------
class WaverBase(Head):
    """Tag injection, temporal transformer, WTI and the losses; subclasses choose what
    the frames are before injection (``frame_features``)."""

    text_fields = ("text_tokens", "text_mask")

    def __init__(self, config):
        super().__init__(config)
        c = config
        d = c.dim
        tag_fields = ("tags", "tag_mask")
        self.video_fields = self.base_video_fields + (tag_fields if c.distill == "injection" else ())
        # the KD loss also needs the caption EOT embedding (the teacher's query)
        self.loss_fields = ("text",) + tag_fields if c.distill == "kd" else ()
        self.injection = TagInjection(d, c.n_heads, c.dropout) if c.distill == "injection" else None
        if c.temporal_layers:
            self.temporal_embedding = nn.Parameter(torch.randn(c.max_frames, d) * 0.01)
        self.temporal = nn.ModuleList(TemporalLayer(d, c.n_heads, c.mlp_ratio) for _ in range(c.temporal_layers))
        self.text_adapter = nn.Linear(d, d, bias=False) if c.text_adapter else nn.Identity()
        if c.text_adapter:
            nn.init.eye_(self.text_adapter.weight)
        hidden = c.wti_hidden or d
        self.text_weight = token_weight_mlp(d, hidden)
        self.video_weight = token_weight_mlp(d, hidden)
        self.register_buffer("log_scale", torch.tensor(math.log(c.logit_scale)))
        self._sums: dict[str, list[float]] = {}  # loss terms since the last extra_metrics()

    base_video_fields: tuple[str, ...] = ("frames", "frame_mask")

    def frame_features(self, batch, mask: torch.Tensor) -> torch.Tensor:
        return batch["frames"]

    def encode_video(self, batch):
        mask = batch["frame_mask"].bool().clone()
        # a video with no valid frame (never a done one) keeps slot 0 so softmaxes stay finite
        mask[:, 0] |= ~mask.any(dim=1)
        n = mask.shape[1]
        if n > self.config.max_frames:
            raise ValueError(f"{n} frames per video, the head was built for {self.config.max_frames}")
        # zero padded slots whatever they hold, so padding cannot reach any score
        batch = dict(batch, frames=torch.where(mask[..., None], batch["frames"], torch.zeros_like(batch["frames"])))
        f = self.frame_features(batch, mask)
        if self.injection is not None:
            k = self.config.tag_k
            f = self.injection(f, batch["tags"][:, :k].to(f.dtype), batch["tag_mask"][:, :k].bool())
        if self.temporal:
            x = f + self.temporal_embedding[:n]
            for layer in self.temporal:
                x = layer(x, mask)
            f = x + f  # seqTransf's skip: transformer(X) + F'
        f = torch.where(mask[..., None], f, torch.zeros_like(f))
        w = masked_softmax(self.video_weight(f).squeeze(-1), mask)
        return {"frames": F.normalize(f, dim=-1), "mask": mask, "weights": w,
                "pooled": F.normalize((w[..., None] * f.float()).sum(1), dim=-1)}

    def encode_text(self, batch):
        t, mask = batch["text_tokens"], batch["text_mask"].bool().clone()
        mask[:, 0] |= ~mask.any(dim=1)
        t = self.text_adapter(torch.where(mask[..., None], t, torch.zeros_like(t)))
        w = masked_softmax(self.text_weight(t).squeeze(-1), mask)
        return {"tokens": F.normalize(t, dim=-1), "mask": mask, "weights": w}

    def index_vectors(self, video_repr):
        return video_repr["pooled"]

    def similarity(self, text_repr, video_repr):
        s = wti_scores(text_repr["tokens"], text_repr["mask"], text_repr["weights"],
                       video_repr["frames"], video_repr["mask"], video_repr["weights"])
        return self.log_scale.exp() * s

    def loss(self, sim, batch, text_repr, video_repr):
        c = self.config
        loss = info_nce(sim)
        if c.distill == "kd":
            g, has = teacher_embedding(batch["tags"], batch["tag_mask"].bool(), c.teacher_k)
            teacher = self.log_scale.exp() * F.normalize(batch["text"].float(), dim=-1) @ g.t()
            kd = kd_loss(sim, teacher, has, c.kd_temperature)
            loss = loss + c.kd_beta * kd
            self._log("kd_loss", kd)
        if c.drl_lambda > 0:
            dc = decorrelation_loss(text_repr["tokens"], text_repr["mask"], text_repr["weights"],
                                    video_repr["frames"], video_repr["mask"], video_repr["weights"],
                                    c.drl_alpha1, c.drl_alpha2)
            loss = loss + c.drl_lambda * dc
            self._log("decorrelation", dc)
        return loss

    def _log(self, name: str, value: torch.Tensor) -> None:
        s = self._sums.setdefault(name, [0.0, 0])
        s[0] += float(value.detach())
        s[1] += 1

    def extra_metrics(self):
        """Epoch means of the extra loss terms (the trainer asks once per epoch)."""
        out = {k: total / max(1, n) for k, (total, n) in self._sums.items()}
        self._sums = {}
        return out


@register_head("waver")
class WaverHead(WaverBase):
    Config = WaverConfig
