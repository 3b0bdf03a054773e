"""EQUISeg: equal encoding of every modality with Cross-modal Transformer Blocks (CMTB), EQUISeg paper §2.1, §2.3.

N branches, one per modality. In each of the four stages every branch is the *primary* once:

    f'_m  = MHSA(f_m)                                  (the MiT stage: efficient self-attention blocks)
    f_aux = PPX(SQHub({f'_n : n != m, n present}))     (Self-Query Hub: scored, element-wise max; then PPX)
    f_m   = f'_m + MHCA(q = f'_m, kv = f_aux)          (Eq. 1-2; the cross-attention has MiT's spatial reduction)

and the SegFormer head sees the per-stage mean of the present branches' f_m.

**Weight sharing (our choice; the paper only gives 52.77 M parameters for MiT-B2, four modalities, 25 classes).**
The MiT stages (patch embeddings, self-attention blocks, stage norms) are *shared* by all branches, as in
M-SegFormer/StitchFusion's equal encoding: one modality is not privileged by owning a better-initialised or larger
encoder, and all branches start from the same ImageNet weights. What makes a branch the primary is its own CMTB: each
modality m owns, per stage, a PPX block (depth 1, CMNeXt's MLP ratios 8, 8, 4, 4) and a multi-head cross-attention
(heads 1, 2, 5, 8; spatial reduction 8, 4, 2, 1 on the keys). The Self-Query Hub's per-modality scorers are shared
across primaries (a modality's informativeness score does not depend on who asks). Head width 768 as SegFormer-B2.
Count (B2, RGB-D-E-L, K=25): 24.20 M encoder + 24.89 M CMTBs (4 x 6.22 M) + 0.05 M hub + 3.17 M head
= 52.31 M, -0.9 % from 52.77 M (the test checks +-3 %).
A fully unshared design (four MiT-B2 + CMTBs) would be ~125 M; one CMTB shared by all primaries ~34 M.

**Presence.** An absent modality's input is zeroed, its branch is left out of the head's mean, and it is masked out
of every other branch's hub max (or mean, in the ablation). A branch with no present auxiliary modality gets no
cross-attention term (``f_m = f'_m``). All masking is arithmetic on the ``present`` tensor (export-friendly).

**Ablations (Table 2):** ``fusion="mean"`` replaces the hub by a masked mean of the auxiliary features;
``cross_attention=False`` adds f_aux directly instead of attending to it; ``residual=False`` drops the add
(f_m = MHCA(...), or f'_m when there is no auxiliary modality to attend to).
"""
from __future__ import annotations

import torch
from torch import nn

from equiseg_ros.models._base import SegModel
from equiseg_ros.models.fusion import PPX, CrossModalAttention, SelfQueryHub, any_present, masked_mean, stack_maps
from equiseg_ros.models.head import SegFormerHead
from equiseg_ros.models.mit import MiTConfig, MixTransformer, _tracing, drop_path_rates
from equiseg_ros.spec import ModelSpec

PPX_MLP_RATIOS = (8, 8, 4, 4)


def _exclusive_max(stack: torch.Tensor, present: torch.Tensor) -> list[torch.Tensor]:
    """For every i, the element-wise max over the present maps other than i (zeros when there is none): equal,
    bit for bit, to ``masked_max(stack, present & others_i)``, but from shared prefix/suffix maxima, so M primaries
    cost about 3M map passes instead of M masked copies and reductions of the whole [B, M, C, H, W] stack (eager
    only: it branches on ``present``'s values)."""
    m = stack.shape[1]
    maps = []
    for j in range(m):
        f = stack[:, j]
        pj = present[:, j]
        if not bool(pj.all()):
            f = torch.where(pj[:, None, None, None], f, f.new_full((), float("-inf")))
        maps.append(f)
    prefix = {0: maps[0]}  # prefix[j] = max(maps[0..j]), suffix[j] = max(maps[j..m-1]); only the ones used
    for j in range(1, m - 1):
        prefix[j] = torch.maximum(prefix[j - 1], maps[j])
    suffix = {m - 1: maps[m - 1]}
    for j in range(m - 2, 0, -1):
        suffix[j] = torch.maximum(maps[j], suffix[j + 1])
    out = []
    for i in range(m):
        if m == 1:
            out.append(torch.zeros_like(stack[:, 0]))
            continue
        if i == 0:
            r = suffix[1]
        elif i == m - 1:
            r = prefix[m - 2]
        else:
            r = torch.maximum(prefix[i - 1], suffix[i + 1])
        any_other = torch.cat([present[:, :i], present[:, i + 1:]], 1).any(1)
        if not bool(any_other.all()):
            r = torch.where(any_other[:, None, None, None], r, r.new_zeros(()))
        out.append(r)
    return out


class CMTB(nn.Module):
    """The modules one primary branch owns in one stage: PPX over the hub output and the cross-attention."""

    def __init__(self, dim: int, heads: int, sr: int, ppx_depth: int, mlp_ratio: float, drop_path: list[float],
                 cross_attention: bool) -> None:
        super().__init__()
        self.ppx = PPX(dim, ppx_depth, mlp_ratio, drop_path)
        self.mhca = CrossModalAttention(dim, heads, sr) if cross_attention else None

    def forward(self, primary: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        """f_c from the primary's f'_m and the hub-fused auxiliary map."""
        f_aux = self.ppx(aux)
        return self.mhca(primary, f_aux) if self.mhca is not None else f_aux


class EQUISeg(SegModel):
    arch = "equiseg"

    def __init__(self, spec: ModelSpec, mit: MiTConfig, decoder_dim: int = 768, drop_path: float = 0.1,
                 fusion: str = "sqhub", cross_attention: bool = True, residual: bool = True,
                 ppx_depths: tuple[int, int, int, int] = (1, 1, 1, 1)) -> None:
        super().__init__(spec)
        if fusion not in ("sqhub", "mean"):
            raise ValueError(f"fusion: expected 'sqhub' or 'mean', got {fusion!r}")
        self.fusion = fusion
        self.cross_attention = cross_attention
        self.residual = residual
        m = self.num_modalities
        dims = mit.embed_dims
        self.encoder = MixTransformer(mit, drop_path=drop_path)
        dpr = drop_path_rates(drop_path, ppx_depths)
        if m > 1:
            self.hub = (nn.ModuleList(SelfQueryHub(d, m) for d in dims) if fusion == "sqhub" else None)
            self.cmtb = nn.ModuleList(
                nn.ModuleList(CMTB(dims[s], mit.num_heads[s], mit.sr_ratios[s], ppx_depths[s], PPX_MLP_RATIOS[s],
                                   dpr[s], cross_attention) for _ in range(m))
                for s in range(4))
        else:  # one modality: nothing to fuse, EQUISeg reduces to SegFormer
            self.hub = None
            self.cmtb = None
        self.head = SegFormerHead(dims, spec.num_classes, decoder_dim)

    def _stage_fusion(self, s: int, feats: list[torch.Tensor], present: torch.Tensor) -> list[torch.Tensor]:
        """CMTB fusion of stage ``s``: every branch is the primary once."""
        m = len(feats)
        if self.cmtb is None:
            return feats
        stack = self.hub[s].score(feats) if self.hub is not None else stack_maps(feats)
        eager = not _tracing() and not stack.is_meta  # meta: shapes only (summary), no values to branch on
        exclusive = _exclusive_max(stack, present) if self.hub is not None and eager else None
        out = []
        for i in range(m):
            others = (torch.arange(m, device=present.device) != i)[None, :]
            aux_mask = present & others
            if exclusive is not None:
                aux = exclusive[i]
            else:
                aux = SelfQueryHub.fuse(stack, aux_mask) if self.hub is not None else masked_mean(stack, aux_mask)
            f_c = self.cmtb[s][i](feats[i], aux)
            has_aux = any_present(aux_mask).to(f_c.dtype)[:, None, None, None]
            if self.residual:
                out.append(torch.addcmul(feats[i], f_c, has_aux))  # feats + f_c * has_aux, one pass
            else:
                out.append(f_c * has_aux + feats[i] * (1.0 - has_aux))
        return out

    def forward(self, x: torch.Tensor, present: torch.Tensor, return_features: bool = False):
        self.check_inputs(x, present)
        m = self.num_modalities
        present = self.as_bool(present[:, :m])
        x = self.zero_absent(x[:, :m], present)
        b = x.shape[0]
        h = x.reshape(b * m, x.shape[2], x.shape[3], x.shape[4])
        modal: list[list[torch.Tensor]] = [[] for _ in range(m)]
        fused = []
        for s in range(4):
            y = self.encoder.forward_stage(s, h)  # f'_m for all branches at once (shared weights)
            y = y.reshape(b, m, y.shape[1], y.shape[2], y.shape[3])
            feats = self._stage_fusion(s, [y[:, i] for i in range(m)], present)
            for i in range(m):
                modal[i].append(feats[i])
            stack = stack_maps(feats)
            fused.append(masked_mean(stack, present))
            h = stack.reshape(b * m, stack.shape[2], stack.shape[3], stack.shape[4])
        logits = self.head(fused)
        if return_features:
            return {"logits": logits, "modal_features": modal, "fused_features": fused}
        return logits
