"""Reports of a tested model: the test report (``report``) and what a study publishes with
it (``analysis``: bootstrap ``intervals``, ``calibration``, ``subgroups``; ``thresholds``
chosen on validation), the run report (``html``, ``runreport``), training curves
(``history``) and their figures (``plots``)."""
