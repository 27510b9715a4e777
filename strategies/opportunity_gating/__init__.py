"""Opportunity gating at 4x: ONNX entry and exit models behind a probability gate."""
