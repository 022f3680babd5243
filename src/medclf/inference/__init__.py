"""A trained model outside training: the one input spec (``spec``), new inputs and
test-time augmentation (``inputs``), the predictions table (``table``), ``predict``,
``export`` (ONNX, TorchScript), ``xai`` (Grad-CAM) and the MLflow model (``pyfunc``). Every
path computes probabilities with the network's ``predict_proba`` and decides with
medclf.models.outputs.decide."""
