"""What every front end reports about this server."""

SERVER_NAME = "inferd"
SERVER_VERSION = "0.1.0"
#: Protocol extensions this server implements (Triton's names); kept truthful
#: by tests that exercise each one.
EXTENSIONS = (
    "classification",
    "model_configuration",
    "statistics",
    "parameters",
    "model_repository",
    "binary_tensor_data",
)
