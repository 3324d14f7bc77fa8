"""The framework-free core: for now the context variables every adapter reads (issue 18, part B,
moves the recorder, worker and processor here)."""
