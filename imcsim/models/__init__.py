"""Networks: the model zoo, model sources (Python factories, ONNX files) and the mapping of their layers onto the hardware."""
