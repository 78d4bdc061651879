"""One private module per backend; gpuconv._registry names them and loads them lazily."""
