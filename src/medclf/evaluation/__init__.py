"""Reports of a tested model: the test report (``report``) and what a study publishes with
it (``analysis``: bootstrap ``intervals``, ``calibration``, ``subgroups``; ``thresholds``
chosen on validation), the run report (its data ``report_data``, its page ``report_page``,
the CLAIM checklist ``claim``), training curves (``history``) and their figures (``plots``)."""
