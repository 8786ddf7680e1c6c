"""boruta-relay: the per-job SSH tunnels of one scheduler host, in a process of their own.

``server`` and ``main`` are the relay process (it imports only ``tunnels`` of the
scheduler); ``client`` is the scheduler's side, a TunnelKeeper that tells the relay what to
hold and reconciles it whenever either of them starts again.
"""
