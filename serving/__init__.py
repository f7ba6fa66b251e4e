"""Query a model over TensorFlow Serving's gRPC API, and serve one locally with the same API."""
