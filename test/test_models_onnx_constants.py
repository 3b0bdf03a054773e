"""The masked fusion ops export without size-dependent constants (a full_like was folded into a 300 MB ONNX)."""
import io

import torch

from equiseg_ros.models.fusion import masked_max, masked_mean


class _Fuse(torch.nn.Module):
    def forward(self, feats: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return masked_max(feats, present) + masked_mean(feats, present)


def _onnx_bytes(size: int) -> int:
    buf = io.BytesIO()
    torch.onnx.export(_Fuse(), (torch.randn(1, 4, 8, size, size), torch.ones(1, 4, dtype=torch.bool)), buf,
                      dynamo=False, opset_version=17)
    return len(buf.getvalue())


def test_masked_fusion_graph_size_does_not_grow_with_input():
    assert abs(_onnx_bytes(64) - _onnx_bytes(16)) < 256
