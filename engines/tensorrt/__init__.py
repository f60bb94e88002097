"""TensorRT: serving plans (``TensorRTEngine``) and building them
(``inferd build-engine``).

Serving: ``engine`` (load sequence, run loop, the pool of execution
contexts), ``execution_slot`` (one context's stream, buffers and IO
binding), ``deserialize`` (plan bytes -> TensorRT engine), ``runtime``
(importing ``tensorrt``/``pycuda``, the TensorRT logger, the CUDA context).
Plan metadata, no TensorRT needed: ``plan`` (sidecar, compatibility, layout),
``profiles`` (optimization profiles). Building: ``build_spec`` (what the
command line asks for: inputs, shapes, precision), ``calibration`` (INT8
samples and calibrator), ``build`` (builder configuration and the build).

Nothing here imports ``tensorrt`` or ``pycuda`` at module import.
"""

from inferd.engines.tensorrt.engine import TensorRTEngine

__all__ = ["TensorRTEngine"]
