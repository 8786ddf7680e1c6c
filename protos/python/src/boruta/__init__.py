"""The boruta API: generated messages and stubs in ``boruta.v1``, and small helpers shared
by the boruta processes (``boruta.logs``)."""
