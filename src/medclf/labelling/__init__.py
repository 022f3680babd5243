"""Labelling images in the browser (``medclf-label``): the folder's images and their labels
(``store``: the one writer of ``labels.csv``), images drawn for the page (``images``), a
trained model's suggestions and the active-learning order (``assist``), and the local web
app (``app``) with its page in ``static/``."""
