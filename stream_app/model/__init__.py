"""The model bundle at serving time: loading and checking it, ONNX sessions, decoding outputs."""
