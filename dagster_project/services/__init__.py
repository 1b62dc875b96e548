"""Services the resources start for a run: the local web server, a throwaway redis-server, a Dask cluster.

``ml/`` never starts them; it receives their URLs and clients as arguments.
"""
