"""Layer ``daemon``: what the host daemon serves besides DNS. ``commands``
runs ``vmsan`` commands for clients on a Unix socket (the warm path, with the
core already imported); ``protocol`` is its wire format, which the client in
``faces`` shares. Sits above ``resolver`` so that the daemon's entry point can
start both; the executor it runs commands with is handed in by ``faces``.

Private to the collection ``vmsan.network``.
"""
