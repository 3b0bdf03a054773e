"""Networks behind the model contract forward(x [B,M,3,H,W], present [B,M]) -> logits [B,K,H/4,W/4]."""
