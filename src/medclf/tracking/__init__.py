"""MLflow: the run logger (``logger``), the logged model (``model``), the runs of a sweep
(``sweeps``), the runs table (``runs``) and the local dashboard (``server``)."""
