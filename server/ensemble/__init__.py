"""Ensembles in Triton's format (``platform: "ensemble"`` with
``ensemble_scheduling``): the dataflow and its checks (``plan``, ``checks``),
the late-bound link to the data plane (``link``), tensors between steps
(``tensors``), the scheduler that runs the steps (``scheduler``) and the
loader that builds an ensemble version (``loader``)."""
