"""Pages to results: the worker context, one page's path, the batch driver, the local pool and Dask."""
