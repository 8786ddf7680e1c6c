"""The application layer: use cases over the pure core, and the engine that owns its state.

The engine is the one owner of scheduling state and the one writer to the store; the
service turns calls into engine commands; watch, audit and tokens serve what they name.
"""
