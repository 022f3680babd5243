"""Knowing the data before trusting a model: one pass over the images (``images``: sizes,
bit depths, histograms, perceptual hashes), near-duplicates within and across splits
(``hashing``, ``duplicates``), likely label errors by confident learning (``labels``), an
out-of-distribution gate fitted on the validation split (``ood``), the data overview
(``overview``), the self-contained ``audit.html`` (``page``) and the order in which the
labelling page shows the suspects (``review``)."""
