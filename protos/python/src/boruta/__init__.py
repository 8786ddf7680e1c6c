"""Generated code of the boruta API; the messages and stubs live in ``boruta.v1``."""
