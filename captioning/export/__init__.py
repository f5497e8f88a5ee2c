"""Exported models: the Hugging Face Hub's folder layout (``model.safetensors``, ``config.json``, a model card
``README.md``; :mod:`captioning.export.pretrained`) and ONNX graphs of the encoder and one decoder step with a
numpy/onnxruntime driver (:mod:`captioning.export.onnx`, :mod:`captioning.export.onnx_driver`)."""
