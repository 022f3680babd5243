"""Reports of a tested model: the test report (``report``), training curves (``history``)
and their figures (``plots``)."""
