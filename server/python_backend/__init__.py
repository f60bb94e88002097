"""Python models in the format of Triton's Python backend.

A model is ``<model>/<version>/model.py`` defining ``TritonPythonModel``
(``initialize(args)``, ``execute(requests) -> responses``, ``finalize()``),
with ``backend: "python"`` in its config.pbtxt. Each instance runs in its own
process (``process``, the child's side in ``stub``); tensors above a small
size cross through shared memory (``transport``); ``pb_utils`` is the
``triton_python_backend_utils`` module the model imports; ``engine`` fits it
all to the engine contract; ``testing`` runs a model without a server.
See docs/python-models.md.

This package imports nothing: the model process loads ``stub`` without
the server's (protobuf, gRPC) modules.
"""
